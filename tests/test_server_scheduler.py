"""The server's plain objects without HTTP: slots, the scheduler's queue, a Sequence's text and finish."""

from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError

from gguflm.sampling import GREEDY, Sampler
from gguflm.server.errors import invalid_request
from gguflm.server.protocol import ChatCompletionRequest
from gguflm.server.scheduler import QueueFull, Scheduler
from gguflm.server.sequence import Sequence, Status
from gguflm.server.slots import SlotManager
from gguflm.synthetic.vocab import spm_tokenizer
from gguflm.tokenizer.tokenizer import Tokenizer


def fake_engine(held):
    return SimpleNamespace(n_slots=len(held), slot_tokens=held)


@pytest.fixture(scope="module")
def tok():
    md = {k: v for k, (v, _) in spm_tokenizer(320).items()}
    return Tokenizer._from_metadata(md, "synthetic")


def seq(tok, prompt, max_tokens=8, stops=(), events=None, stop_ids=frozenset({2})):
    deliver = (events.append if events is not None else lambda e: None)
    return Sequence(prompt, max_tokens, Sampler.new(GREEDY, "cpu"), tok, stop_ids, list(stops), None, deliver)


def test_a_prompt_takes_the_free_slot_with_the_longest_cached_prefix():
    slots = SlotManager(fake_engine([[1, 2, 3], [1, 2, 3, 4, 5], [], [9]]))
    assert slots.acquire([1, 2, 3, 4, 7]) == 1
    assert slots.acquire([1, 2, 8]) == 0
    assert slots.acquire([5]) == 2  # no prefix anywhere: the slot used longest ago
    assert slots.busy == 3
    slots.release(1)
    assert slots.acquire([1, 2, 3, 4, 5, 6]) == 1 and slots.acquire([0]) == 3 and slots.acquire([0]) is None


def test_the_queue_is_first_come_first_served_and_bounded(tok):
    sched = Scheduler(SlotManager(fake_engine([[], []])), max_queue=3)
    a, b, c = (seq(tok, [1, i]) for i in (5, 6, 7))
    for s in (a, b, c):
        sched.add(s)
    with pytest.raises(QueueFull):
        sched.add(seq(tok, [1]))
    assert sched.admit() == [a, b] and list(sched.waiting) == [c]
    assert a.status is Status.RUNNING and {a.slot, b.slot} == {0, 1}
    sched.finish(a)
    assert sched.admit() == [c] and c.slot == a.slot


def test_cancelled_sequences_leave_the_queue_and_the_batch(tok):
    sched = Scheduler(SlotManager(fake_engine([[]])), max_queue=4)
    running, waiting = seq(tok, [1, 5]), seq(tok, [1, 6])
    sched.add(running)
    sched.add(waiting)
    sched.admit()
    running.cancelled = waiting.cancelled = True
    assert sched.drop_cancelled() == [waiting, running]
    assert not sched.has_work and sched.slots.busy == 0


def test_sequence_text_stops_at_a_stop_string_and_holds_back_its_start(tok):
    ids = tok.encode("hello world once upon", add_special=False)
    events = []
    s = seq(tok, [1], max_tokens=50, stops=["once"], events=events)
    logits = torch.zeros(320)
    fed = 0
    while not s.accept(ids[fed], logits, room=100):
        fed += 1
        assert not "".join(e.text for e in events).endswith("o")  # a trailing "o" waits: it may begin "once"
    assert s.finish_reason == "stop" and tok.decode(ids[: fed + 1]).endswith("once")
    assert "".join(e.text for e in events + [s.final]) == tok.decode([1] + ids).split("once")[0]
    assert s.final.finish == "stop" and all(e.finish is None for e in events)


def test_sequence_ends_at_the_token_budget_the_context_and_end_of_generation(tok):
    logits = torch.zeros(320)
    s = seq(tok, [1], max_tokens=2)
    assert not s.accept(300, logits, room=10) and s.accept(301, logits, room=10) and s.finish_reason == "length"
    s = seq(tok, [1], max_tokens=9)
    assert s.accept(300, logits, room=0) and s.finish_reason == "length"
    events = []
    s = seq(tok, [1], max_tokens=9, events=events)
    assert s.accept(2, logits, room=10) and s.finish_reason == "stop" and s.final.text == "" and not events
    assert s.usage == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                       "prompt_tokens_details": {"cached_tokens": 0}}


@pytest.mark.parametrize("body,param", [
    ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 17}, "stop"),
    ({"messages": [{"role": "user", "content": "x"}], "seed": 1.5}, "seed"),
])
def test_validation_errors_name_the_field(body, param):
    with pytest.raises(ValidationError) as e:
        ChatCompletionRequest.model_validate(body)
    err = invalid_request(e.value)
    assert err.status == 400 and err.param == param and param in err.message
