"""The engine process's wire: every event and record of engine.api goes through a line of JSON
and comes back equal, and what is not a message is refused as one."""

from __future__ import annotations

import json

import pytest

from hailo_repl.context import ContextUsage
from hailo_repl.daemon import protocol
from hailo_repl.daemon.protocol import Opened, OpenRequest
from hailo_repl.engine.api import (
    Attached,
    Busy,
    ChatChange,
    ChatChanged,
    EngineError,
    EngineGone,
    EngineNotice,
    EngineState,
    ErrorCode,
    ModelState,
    Snapshot,
    Status,
    Switched,
    TurnCompleted,
    TurnEnd,
    TurnMode,
    TurnNotice,
    TurnStarted,
    TurnText,
    UsageChanged,
)
from hailo_repl.stats import ReplyStats

STATS = ReplyStats(prompt_tokens=12, generated_tokens=40, time_to_first_token=0.25, total=2.5, load=1.5)

EVENTS = [
    EngineState(1, ModelState.LOADING, "qwen2.5-1.5b", "hailo"),
    EngineState(2, ModelState.FAILED, "m", "llama", Busy.SWITCHING_MODEL, "no model at /x.gguf"),
    EngineState(3, ModelState.READY, "m", "llama", Busy.SAVING_CONTEXT),
    EngineNotice(4, "[Info] Keeping the device context for a quick resume…"),
    UsageChanged(5, ContextUsage(847, 4096, True)),
    TurnStarted(6, 1, TurnMode.CONTINUE, 'go on ünïcode ✓ \n\t"quoted"'),
    TurnText(7, 1, "Hello,\n```py\nx = '\\u00e9'\n```", 3),
    TurnNotice(8, 1, "[Context] Dropped the 2 oldest turn(s)"),
    TurnCompleted(9, 1, TurnEnd.DONE, None, STATS, ContextUsage(900, 4096), "d5822af9"),
    TurnCompleted(10, 2, TurnEnd.ERROR, "[Error] the server went away", None, None, ""),
    TurnCompleted(0, 3, TurnEnd.INTERRUPTED),
    ChatChanged(11, "0c1d2e3f", ChatChange.FORKED),
]


def same(left, right):
    """Records compare by their fields (Record defines no __eq__)."""
    assert type(left) is type(right)
    for name in left._names:
        a, b = getattr(left, name), getattr(right, name)
        if isinstance(a, tuple) and a and hasattr(a[0], "_names"):
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                same(x, y)
        else:
            assert a == b, name


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: f"{type(event).__name__}-{event.seq}")
def test_every_event_goes_through_one_line_and_comes_back_equal(event):
    line = protocol.event_line(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one object, one line, whatever the text holds
    back = protocol.event_from_wire(protocol.decode(line))
    same(back, event)


def test_the_events_method_names_follow_the_design_notes():
    assert protocol.event_to_wire(EVENTS[5])["method"] == "turn/started"
    assert protocol.event_to_wire(EVENTS[6])["method"] == "turn/text"
    assert protocol.event_to_wire(EVENTS[8])["method"] == "turn/completed"
    assert protocol.event_to_wire(EVENTS[4])["method"] == "chat/usage"
    assert protocol.event_to_wire(EVENTS[0])["method"] == "engine/state"
    assert set(protocol.EVENT_METHODS) >= {type(event) for event in EVENTS}


def test_text_stays_text_on_the_wire_not_escaped():
    line = protocol.event_line(TurnText(1, 1, "naïve ✓ 日本", 1))
    assert "naïve ✓ 日本".encode() in line


def test_records_go_through_and_come_back_equal():
    status = Status(
        model="m",
        backend="hailo",
        state=ModelState.READY,
        chat="abc",
        loads_in_background=False,
        params={"temperature": 0.7, "max-tokens": 512, "top-p": None},
        load_seconds=4.5,
        saving=True,
        unsaved=True,
        busy=Busy.SAVING_CONTEXT,
    )
    snapshot = Snapshot(
        "abc",
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "interrupted": True}],
        7,
        "and then?",
        (TurnText(40, 7, "Once upon", 5), TurnNotice(41, 7, "[Info] waiting for the server")),
    )
    for record, read in [
        (status, protocol.status_from_wire),
        (snapshot, protocol.snapshot_from_wire),
        (Attached("notes.txt", 1200, 300, 7), protocol.attached_from_wire),
        (Switched("no such file", "m failed to load again"), protocol.switched_from_wire),
        (Switched(), protocol.switched_from_wire),
    ]:
        wire = json.loads(json.dumps(protocol.record_to_wire(record)))
        same(read(wire), record)


def test_the_attach_answer_goes_through_whole():
    snapshot = Snapshot("abc", [], 1, "q", (TurnText(3, 1, "so far", 2),))
    status = Status("m", "llama", ModelState.LOADING, "abc", True, {})
    opened = Opened(snapshot, status, ContextUsage(10, 100), True, ["[Error] Cannot save the chat: disk full"])
    back = protocol.opened_from_wire(json.loads(json.dumps(protocol.opened_to_wire(opened))))
    same(back.snapshot, snapshot)
    same(back.status, status)
    assert back.usage == ContextUsage(10, 100) and back.unseen and back.lines == opened.lines


def test_an_open_request_goes_through_and_its_api_key_is_never_logged():
    request = OpenRequest(
        chat="latest",
        take_over=True,
        backend="openai",
        model_name="gpt-x",
        url="http://127.0.0.1:9",
        api_key="sk-secret",
        environ={"OPENAI_API_KEY": "sk-other-secret"},
        params={"temperature": 0.2},
        system_prompt="be brief",
        history=False,
    )
    line = protocol.request(1, "chat/open", protocol.record_to_wire(request))
    back = protocol.open_request_from_wire(protocol.decode(line)["params"])
    assert back.loggable() == request.loggable()
    assert back.api_key == "sk-secret" and back.environ == {"OPENAI_API_KEY": "sk-other-secret"}
    assert "secret" not in json.dumps(request.loggable())
    assert back.backend_key() == request.backend_key() != OpenRequest().backend_key()


def test_requests_replies_and_errors_are_framed_as_the_notes_say():
    assert json.loads(protocol.request(3, "turn/start", {"text": "hi", "mode": "message"})) == {
        "id": 3,
        "method": "turn/start",
        "params": {"text": "hi", "mode": "message"},
    }
    assert json.loads(protocol.result(3, {"turn": 1})) == {"id": 3, "result": {"turn": 1}}
    assert json.loads(protocol.error(3, "busy", "[Error] a reply is running")) == {
        "id": 3,
        "error": {"code": "busy", "line": "[Error] a reply is running"},
    }
    remote = protocol.RemoteError("busy", "a reply is running")
    assert isinstance(remote.engine_error(), EngineError) and remote.engine_error().code is ErrorCode.BUSY
    assert protocol.RemoteError(protocol.HELD_ELSEWHERE, "x").engine_error(ErrorCode.LOAD_FAILED).code is (
        ErrorCode.LOAD_FAILED
    )


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n", b"\xff\xfe\n", b'"a string"\n'])
def test_a_line_that_is_not_a_message_is_refused_as_one(line):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(line)


def test_an_event_with_a_field_missing_or_wrong_is_refused():
    with pytest.raises(protocol.ProtocolError):
        protocol.event_from_wire({"method": "turn/text", "params": {"seq": 1, "turn": 1}})
    with pytest.raises(protocol.ProtocolError):
        protocol.event_from_wire({"method": "turn/completed", "params": {"seq": 1, "turn": 1, "reason": "exploded"}})
    with pytest.raises(protocol.ProtocolError):
        protocol.event_from_wire({"method": "no/such", "params": {}})


def test_the_line_limit_holds_the_largest_paste_and_file():
    assert protocol.MAX_LINE >= 2 * 4_000_000 * 2  # 4 M characters, each up to two when JSON-escaped, and more
    assert EngineGone(0, "x").exit_code == 1
