"""Hostile chat templates fail fast with GGUFLMError and touch nothing."""

import time

import pytest

from gguflm.chat.template import ChatTemplate
from gguflm.errors import GGUFLMError

MESSAGES = [{"role": "user", "content": "hi"}]

HOSTILE = {
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__ }}",
    "item-dunder": "{{ ''['__class__'] }}",
    "attr-filter": "{{ messages|attr('__class__') }}",
    "map-dunder": "{{ messages|map(attribute='__class__')|list }}",
    "template-self": "{{ self.__dict__ }}",
    "import": "{% import 'os' as os %}{{ os.system('true') }}",
    "from-import": "{% from 'os' import system %}",
    "include": "{% include '/etc/passwd' %}",
    "extends": "{% extends '/etc/passwd' %}",
    "mutate": "{{ messages.append(1) }}",
    "namespace-dunder": "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
    "huge-range": "{% for i in range(10**9) %}x{% endfor %}",
    "huger-range": "{% for i in range(10**12) %}x{% endfor %}",
    "recursive-loop": "{% for i in range(10) recursive %}{{ loop(range(10)) }}{% endfor %}",
    "wide-recursion": "{% for i in range(2) recursive %}{% if loop.depth < 80 %}{{ loop(range(2)) }}{% endif %}"
    "{% endfor %}",
    "recursive-macro": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "nested-loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "str-times": "{{ 'x' * 10**10 }}",
    "list-times": "{{ ['x' * 1000] * 10**7 }}",
    "str-doubling": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "tilde-doubling": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}",
    "block-set-output": "{% set x %}{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}{% endset %}",
    "big-power": "{{ 2 ** 100000000 }}",
    "int-squaring": "{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "center": "{{ 'x'|center(10**10) }}",
    "ljust": "{{ 'x'.ljust(10**10) }}",
    "printf-width": "{{ '%999999999s'|format('x') }}",
    "printf-star": "{{ '%*s' % (10**10, 'x') }}",
    "format-width": "{{ '{:>9999999999}'.format('x') }}",
    "replace": "{{ ('x' * 1000000)|replace('x', 'x' * 1000) }}",
    "join": "{{ (['x'] * 100000)|join('y' * 1000000) }}",
    "indent": "{{ ('\n' * 1000000)|indent(1000) }}",
    "tojson-indent": "{{ messages|tojson(indent=10**9) }}",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_template_fails_fast(source):
    start = time.monotonic()
    with pytest.raises(GGUFLMError):
        ChatTemplate(source, name="hostile").render(MESSAGES)
    assert time.monotonic() - start < 2.0


def test_globals_escape_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    source = "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
    with pytest.raises(GGUFLMError, match="not allowed"):
        ChatTemplate(source).render(MESSAGES)
    assert not marker.exists()


def test_include_reads_no_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE", encoding="utf-8")
    with pytest.raises(GGUFLMError, match="may not include or import") as caught:
        ChatTemplate("{% include '" + str(secret) + "' %}").render(MESSAGES)
    assert "TOP-SECRET-VALUE" not in str(caught.value)


def test_caller_messages_are_never_modified():
    messages = [{"role": "user", "content": "hi", "extra": [1]}]
    with pytest.raises(GGUFLMError):
        ChatTemplate("{{ messages[0].extra.append(2) }}").render(messages)
    assert messages == [{"role": "user", "content": "hi", "extra": [1]}]


def test_budget_resets_between_renders():
    endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    source = "{% if stop %}" + endless + "{% endif %}ok"
    template = ChatTemplate(source)
    with pytest.raises(GGUFLMError, match="was stopped"):
        template.render(MESSAGES, stop=True)
    assert template.render(MESSAGES, stop=False) == "ok"


def test_legitimate_large_values_pass():
    source = "{{ ('x' * 100000)|length }} {{ '%d'|format(1700000000) }} {{ '{:>5}'.format(7) }} {{ 10 ** 30 }}"
    assert ChatTemplate(source).render([]) == "100000 1700000000     7 " + str(10**30)


BUDGET_BREAKERS = {  # each ran past its budget (or a Python error escaped) before the render had real limits
    "list-doubling-compared": "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}"
                              "{% endfor %}{{ ns.x == ns.x }}",
    "list-doubling-printed": "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}"
                             "{% endfor %}{{ ns.x }}",
    "dict-doubling-tojson": "{% set ns = namespace(x={}) %}{% for i in range(60) %}{% set ns.x = {'a': ns.x, "
                            "'b': ns.x} %}{% endfor %}{{ ns.x|tojson }}",
    "strftime-width": "{{ strftime_now('%1270Y' * 1333333) }}",
    "strftime-wide-field": "{{ strftime_now('%0999d') }}",
    "nested-for": "".join("{% for i" + str(k) + " in [1] %}" for k in range(25)) + "x" + "{% endfor %}" * 25,
    "nested-if": "{% if true %}" * 120 + "x" + "{% endif %}" * 120,
    "wordwrap": "{{ ('a ' * 4000000)|wordwrap }}",
    "striptags": "{{ ('<a>' * 2000000)|striptags }}",
    "title": "{{ ('a ' * 4000000)|title }}",
    "urlize": "{{ ('a.com ' * 1000000)|urlize }}",
}


@pytest.mark.parametrize("source", BUDGET_BREAKERS.values(), ids=BUDGET_BREAKERS.keys())
def test_budget_breakers_are_stopped(source):
    with pytest.raises(GGUFLMError):
        ChatTemplate(source, name="hostile").render(MESSAGES)


def test_a_huge_template_is_refused_before_compiling():
    with pytest.raises(GGUFLMError, match="characters, more than the 262144 a chat template may have"):
        ChatTemplate("{{ 'x' }}" * 400_000)


def test_literals_that_share_their_parts_are_weighed_fast():
    from gguflm.chat import limits

    x: list = [1]
    for _ in range(200):  # 2^200 items counted with sharing, 200 distinct lists
        x = [x, x]
    assert limits.weight(x) == limits.MAX_CHARS + 1
    assert limits.weight([["ab", "c"], ("d",), {"e": "fg"}]) == 3 + (2 + 3) + (1 + 1) + (1 + 1 + 2)
    # real templates keep working with literals wrapped: a dict and a list built in the template
    out = ChatTemplate("{% set d = {'a': [1, 2], 'b': (3,)} %}{{ d['a'][1] }}{{ d.b[0] }}").render(MESSAGES)
    assert out == "23"
