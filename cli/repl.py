"""The chat front end: a prompt_toolkit REPL (or plain lines from a pipe) over a ChatSession."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

from gguflm.chat.session import _SETTINGS, ChatSession
from gguflm.chat.thinking import ThinkingSplitter
from gguflm.errors import GGUFLMError

DIM, YELLOW, RESET = "\x1b[2m", "\x1b[33m", "\x1b[0m"
FENCE = '"""'

HELP = f"""commands:
  /help               this text
  /exit               leave (or Ctrl-D)
  /clear              a new conversation (same model, same system prompt)
  /system [TEXT]      show or set the system prompt (/system - removes it)
  /regen              drop the last reply and generate it again
  /save FILE          save the conversation as a JSON list of {{role, content}}
  /load FILE          continue a conversation saved with /save
  /set [NAME VALUE]   show or change temp, top_k, top_p, min_p, repeat_penalty,
                      repeat_last_n, seed (none: random), max_tokens (-1: no limit)
  /stats              numbers about the last reply and the whole session
  /show template      the chat template in use
  /show system        the system prompt in effect (also one the template adds by itself)
  /read FILE          send the text of FILE as a message
multi-line input: start with {FENCE} and end with {FENCE}, or Alt-Enter (Esc Enter) for a newline.
Ctrl-C stops a reply; at an empty prompt, press it twice to leave."""


def use_color(stream: TextIO) -> bool:
    """Dim and colored text only on a real terminal, and not when NO_COLOR or TERM=dumb says otherwise."""
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def history_path() -> Path:
    """~/.local/share/gguflm/history, or under $XDG_DATA_HOME when set."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "gguflm" / "history"


def opens_block(line: str) -> bool:
    """True for a line that starts a triple-quoted message and does not close it."""
    body = line.lstrip()
    return body.startswith(FENCE) and not body[len(FENCE) :].rstrip().endswith(FENCE)


class ReplyPrinter:
    """Writes a streamed reply: thinking dimmed (or hidden), the answer as it comes."""

    def __init__(self, out: TextIO, color: bool, hide_thinking: bool, thinking: Callable[[], bool]):
        self.out, self.color, self.hide = out, color, hide_thinking
        self._thinking = thinking  # asked at the first piece, once the prompt is rendered
        self.split: ThinkingSplitter | None = None
        self.at_line_start = True
        self.dimmed = False
        self.wrote = False  # any visible text at all (an empty reply writes none)

    def feed(self, piece: str) -> None:
        if self.split is None:
            self.split = ThinkingSplitter(self._thinking())
        self._write(self.split.feed(piece))

    def finish(self, newline: bool = False) -> None:
        """End the reply's line; `newline` ends an empty reply with a line too."""
        if self.split is not None:
            self._write(self.split.flush())
        self._dim(False)
        if not self.at_line_start or (newline and not self.wrote):
            self.out.write("\n")
        self.out.flush()

    def _write(self, runs: list[tuple[bool, str]]) -> None:
        for thinking, text in runs:
            if thinking and self.hide:
                continue
            if not text:
                continue
            self._dim(thinking)
            self.out.write(text)
            self.at_line_start = text.endswith("\n")
            self.wrote = True
        self.out.flush()

    def _dim(self, on: bool) -> None:
        """Switch dim text on or off, only at a change (so a streamed thought is not one escape per token)."""
        if self.color and on != self.dimmed:
            self.out.write(DIM if on else RESET)
            self.dimmed = on


class Repl:
    """Commands and turns over a ChatSession, for a terminal or for lines from a pipe."""

    def __init__(self, session: ChatSession, hide_thinking: bool = False, interactive: bool = True,
                 history: bool = True):
        self.session = session
        self.hide_thinking = hide_thinking or not interactive  # a script gets the answers only
        self.interactive = interactive
        self.history = history  # keep the terminal's input history on disk
        self.out = sys.stdout
        self.info_out = sys.stdout if interactive else sys.stderr  # a pipe's stdout carries replies only
        self.color = interactive and use_color(sys.stdout)

    # ---------------------------------------------------------------- output

    def info(self, text: str, style: str = DIM) -> None:
        self.info_out.write(f"{style}{text}{RESET}\n" if self.color else text + "\n")
        self.info_out.flush()

    def notices(self) -> None:
        for notice in self.session.notices:
            self.info(notice, YELLOW)
        self.session.notices.clear()

    # ---------------------------------------------------------------- turns

    def reply(self, make_stream: Callable[[], Iterator[str]]) -> None:
        """Stream one reply; Ctrl-C stops it and keeps what was said."""
        printer = ReplyPrinter(self.out, self.color, self.hide_thinking, lambda: self.session.thinking_open)
        stream = make_stream()
        try:
            for piece in stream:
                if printer.split is None:
                    self.notices()  # what making room for the reply did, before the reply
                printer.feed(piece)
        except KeyboardInterrupt:
            printer.finish()
            self.info("[stopped]")
        else:
            printer.finish(newline=not self.interactive)
            if self.interactive and not printer.wrote:
                self.info("[empty reply: the model ended its turn at once]")
        finally:
            stream.close()
        if self.interactive:
            self.info(self.session.stats_line())
        self.notices()

    def handle(self, text: str) -> bool:
        """One input: a /command or a message. Returns False to leave."""
        try:
            if text.startswith("/"):
                return self.command(text)
            self.reply(lambda: self.session.send(text))
        except GGUFLMError as e:
            self.notices()
            self.info(f"error: {e}", YELLOW)
            if not self.interactive and not text.startswith("/"):
                self.out.write("\n")  # a script still gets one line per message
                self.out.flush()
        return True

    def command(self, line: str) -> bool:
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        s = self.session
        if name in ("/exit", "/quit", "/bye"):
            return False
        if name in ("/help", "/?"):
            self.info(HELP, "")
        elif name == "/clear":
            s.clear()
            self.info("new conversation")
        elif name == "/system":
            if arg:
                s.set_system("" if arg == "-" else arg)
            self.info(f"system prompt: {s.system!r}" if s.system else "no system prompt")
        elif name == "/regen":
            self.reply(s.regen)
        elif name in ("/save", "/load"):
            if not arg:
                raise GGUFLMError(f"{name} needs a file name")
            if name == "/save":
                self.info(f"saved {len(s.messages)} messages to {s.save(arg)}")
            else:
                self.info(f"loaded {s.load(arg)} messages from {arg}")
        elif name == "/set":
            self._set(arg)
        elif name == "/stats":
            self._stats()
        elif name == "/show":
            self._show(arg)
        elif name == "/read":
            self._read(arg)
        else:
            raise GGUFLMError(f"unknown command {name}; /help lists them")
        return True

    def _set(self, arg: str) -> None:
        parts = arg.split()
        if not parts:
            self.info("  ".join(f"{k}={v}" for k, v in self.session.settings().items()), "")
        elif len(parts) != 2:
            raise GGUFLMError("usage: /set NAME VALUE (e.g. /set temp 0.7)")
        else:
            self.info(self.session.set(*parts))

    def _show(self, what: str) -> None:
        s = self.session
        if what == "template":
            self.info(s.template.source.rstrip("\n"), "")
        elif what == "system":
            if s.system is not None:
                self.info(f"system prompt: {s.system!r}")
            elif s.template.default_system():
                self.info(f"system prompt (the template's own, none was set): {s.template.default_system()!r}")
            else:
                self.info("no system prompt")
        else:
            raise GGUFLMError("usage: /show template or /show system")

    def _read(self, arg: str) -> None:
        if not arg:
            raise GGUFLMError("/read needs a file name")
        from gguflm.cli.options import read_text_file

        text = read_text_file(arg, "the message file")
        if not text.strip():
            raise GGUFLMError(f"{arg!r} is empty")
        self.reply(lambda: self.session.send(text.rstrip("\n")))

    def _stats(self) -> None:
        s, e = self.session, self.session.engine
        self.info(s.stats_line(), "")
        self.info(
            f"messages {len(s.messages)} · prefilled {e.stats.total_prefilled} tok in total · "
            f"generated {e.stats.total_generated} tok in total · "
            f"last reply ended by {(e.stats.last.finish_reason if s.replied else '') or '-'}",
            "",
        )

    # ---------------------------------------------------------------- loops

    def run_lines(self, lines: Iterable[str]) -> None:
        """Scripted chat: one message per line (a triple-quoted block spans lines); replies to stdout."""
        it = iter(lines)
        for line in it:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            text = read_block(line, lambda: next(it).rstrip("\n")) if line.lstrip().startswith(FENCE) else line
            if not self.handle(text):
                return

    def run_terminal(self) -> None:
        """The interactive loop: line editing, history, Ctrl-C and Ctrl-D handling."""
        prompt, more, remember = make_prompt(self.history)
        self.info("type a message, /help for commands, Ctrl-D to leave")
        interrupted = False
        while True:
            try:
                with ctrl_c_is_a_key():
                    line = prompt("> ")
                    if opens_block(line):
                        line = read_block(line, lambda: more("... "))
                        remember(f"{FENCE}{line}{FENCE}")  # the whole block, one history entry
                    elif line.lstrip().startswith(FENCE):  # a closed block on one line (or from history)
                        line = read_block(line, lambda: more("... "))
            except KeyboardInterrupt:
                if interrupted:
                    return
                interrupted = True
                self.info("(Ctrl-C again or Ctrl-D to leave)")
                continue
            except EOFError:
                return
            interrupted = False
            if line.strip() and not self.handle(line):
                return


@contextmanager
def ctrl_c_is_a_key(stream: TextIO | None = None):
    """While the prompt is up, Ctrl-C reaches it as a key (the terminal's ISIG off), not as SIGINT.

    prompt_toolkit reads Ctrl-C as a key once it runs; a SIGINT landing while it is still being set
    up would raise wherever Python happens to be, and be lost when that is a destructor. With ISIG
    off from the start, that Ctrl-C waits in the input for the prompt. Replies get SIGINT as usual.
    """
    stream = stream or sys.stdin
    try:
        import termios
    except ImportError:  # not Unix: prompt_toolkit's own handling only
        yield
        return
    try:
        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError, AttributeError):  # not a terminal
        yield
        return
    changed = list(saved)
    changed[3] &= ~termios.ISIG  # lflag
    termios.tcsetattr(fd, termios.TCSANOW, changed)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def read_block(first: str, more: Callable[[], str]) -> str:
    """A message between triple-quote fences; `first` holds the opening one, `more` reads the next line."""
    body = first.lstrip()[len(FENCE) :]
    lines = []
    while not body.rstrip().endswith(FENCE):
        lines.append(body)
        try:
            body = more()
        except StopIteration:
            return "\n".join(lines).strip("\n")
    lines.append(body.rstrip()[: -len(FENCE)])
    return "\n".join(lines).strip("\n")


HISTORY_ENTRIES = 1000  # the history file keeps this many inputs, the newest


COMMANDS = ("/help", "/exit", "/clear", "/system", "/regen", "/save", "/load", "/set", "/stats", "/show", "/read")
SHOW = ("template", "system")
SETTINGS = tuple(_SETTINGS)  # the names /set takes


def make_completer():
    """Tab completion: command names, /show's and /set's words, file names after /read, /save, /load."""
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document

    paths = PathCompleter(expanduser=True)

    class ChatCompleter(Completer):
        def get_completions(self, document, complete_event):
            text = document.text_before_cursor
            if not text.startswith("/"):
                return
            name, space, arg = text.partition(" ")
            if not space:
                words = COMMANDS
            elif name in ("/read", "/save", "/load"):
                yield from paths.get_completions(Document(arg, len(arg)), complete_event)
                return
            else:
                words = {"/show": SHOW, "/set": SETTINGS}.get(name, ())
                name = arg
                if " " in arg:
                    return
            for word in words:
                if word.startswith(name):
                    yield Completion(word, start_position=-len(name))

    return ChatCompleter()


def make_history(enabled: bool):
    """The input history: a file under history_path() holding the last HISTORY_ENTRIES inputs, or
    memory only (--no-history, GGUFLM_NOHISTORY=1, or a file that cannot be written)."""
    from prompt_toolkit.history import FileHistory, History, InMemoryHistory

    class ChatHistory(History):
        """A history that skips the opening line of a triple-quoted block (the whole block is stored)."""

        def __init__(self, inner: History):
            super().__init__()
            self.inner = inner

        def load_history_strings(self):
            return self.inner.load_history_strings()

        def append_string(self, string: str) -> None:
            if not opens_block(string):
                super().append_string(string)

        def store_string(self, string: str) -> None:
            self.inner.store_string(string)

    if not enabled:
        return ChatHistory(InMemoryHistory())
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        trim_history(path, HISTORY_ENTRIES)
        return ChatHistory(FileHistory(str(path)))
    except (OSError, GGUFLMError):
        return ChatHistory(InMemoryHistory())


def trim_history(path: Path, keep: int) -> None:
    """Rewrite the history file with its newest `keep` entries when it holds more (atomically)."""
    from prompt_toolkit.history import FileHistory

    from gguflm.files import atomic_write

    if not path.is_file():
        return
    entries = list(FileHistory(str(path)).load_history_strings())  # newest first
    if len(entries) <= keep:
        return
    with atomic_write(path, "the chat history") as tmp:
        kept = FileHistory(str(tmp))
        for entry in reversed(entries[:keep]):
            kept.store_string(entry)


def _prompt_output():
    """Where the prompt is drawn: the terminal on stdout, else stderr (stdout is a file or a pipe).

    Set as prompt_toolkit's session output rather than passed in, so that TERM=dumb still gets
    its plain prompt."""
    from contextlib import nullcontext

    if sys.stdout.isatty():
        return nullcontext()
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.output import create_output

    return create_app_session(output=create_output(stdout=sys.stderr))


def make_prompt(history: bool = True) -> tuple[Callable[[str], str], Callable[[str], str], Callable[[str], None]]:
    """prompt_toolkit prompts: (the message prompt, with history and completion; the prompt for a
    block's further lines, without; a function that stores a whole block in the history).

    Alt-Enter inserts a newline, Ctrl-C clears the line first. When stdout is not a terminal (a
    `| tee log`), the prompt is drawn on stderr so the redirected output gets no cursor redraws.
    """
    from prompt_toolkit import PromptSession
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("c-c")
    def _interrupt(event) -> None:
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

    store = make_history(history)
    with _prompt_output():  # the sessions take their output when made
        session = PromptSession(history=store, key_bindings=bindings, completer=make_completer(),
                                complete_while_typing=False)
        block = PromptSession(key_bindings=bindings)

    def remember(text: str) -> None:
        strings = store.get_strings()
        if not strings or strings[-1] != text:
            store.append_string(text)

    return (lambda message: session.prompt(message)), (lambda message: block.prompt(message)), remember
