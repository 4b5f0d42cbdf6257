"""The reply's text reaches the loop a frame at a time, so drawing does not take a share of the
CPU that grows with the token rate; the first text, the end and Ctrl+C are never held back."""

import asyncio
import io
import threading
import time

from hailo_repl.console import Console
from hailo_repl.render import ASSISTANT_PREFIX, ReplyRenderer, show_reply
from hailo_repl.reply_channel import ReplyChannel, ReplyEvent
from hailo_repl.wrap import WordWrap

LONG = 30.0  # a frame interval no test could wait out: an event that waited for it would time out
FRAME = 0.1  # seconds: the pacing a test waits out (the product's is 0.2)


async def take(channel: ReplyChannel, count: int, timeout: float = 5.0) -> list[tuple[ReplyEvent, str, int]]:
    return [await asyncio.wait_for(channel.get(), timeout) for _ in range(count)]


def test_the_first_text_comes_at_once_and_the_rest_a_frame_at_a_time_in_order():
    pieces = [f"t{i} " for i in range(60)]

    async def main():
        channel = ReplyChannel(asyncio.get_running_loop(), frame_interval=FRAME)
        first_taken = threading.Event()

        def generate():  # as the reply's thread does: a piece every FRAME / 20
            channel.put_text(pieces[0])
            first_taken.wait(5)
            for piece in pieces[1:]:
                time.sleep(FRAME / 20)
                channel.put_text(piece)
            channel.put(ReplyEvent.DONE)

        thread = threading.Thread(target=generate)
        thread.start()
        events = []
        while not events or events[-1][0] is not ReplyEvent.DONE:
            kind, value, count = await asyncio.wait_for(channel.get(), 5)
            events.append((kind, value, count, time.monotonic()))
            first_taken.set()
        thread.join()
        return events

    events = asyncio.run(main())
    texts = [e for e in events if e[0] is ReplyEvent.TEXT]
    assert texts[0][1:3] == ("t0 ", 1)  # the first token shows as soon as it comes
    assert "".join(e[1] for e in texts) == "".join(pieces)
    assert sum(e[2] for e in texts) == len(pieces)  # the toolbar's tok/s counts every token
    # 60 pieces over ~3 frames (or longer on a loaded machine) in a handful of frames, a frame apart at least
    assert len(texts) <= 2 + (texts[-1][3] - texts[0][3]) / FRAME
    gaps = [later[3] - earlier[3] for earlier, later in zip(texts, texts[1:], strict=False)]
    assert len(texts) >= 3, texts  # the first text, a frame's, and the last: gaps to compare
    assert min(gaps[:-1]) >= 0.95 * FRAME  # (the last text comes with the end, at once)


def test_the_end_an_error_and_ctrl_c_come_at_once_after_the_text_before_them():
    async def main(last: ReplyEvent):
        channel = ReplyChannel(asyncio.get_running_loop(), frame_interval=LONG)
        channel.put_text("Hello")
        first = await take(channel, 1)
        channel.put_text(" there,")
        channel.put_text(" friend")
        channel.put(last, "why" if last is ReplyEvent.ERROR else "")
        return first + await take(channel, 2)  # a wait for the frame would time out

    for last in (ReplyEvent.DONE, ReplyEvent.ERROR, ReplyEvent.INTERRUPTED):
        events = asyncio.run(main(last))
        value = "why" if last is ReplyEvent.ERROR else ""
        assert events == [
            (ReplyEvent.TEXT, "Hello", 1),
            (ReplyEvent.TEXT, " there, friend", 2),
            (last, value, 0),
        ]


def test_a_notice_keeps_its_place_among_the_text():
    async def main():
        channel = ReplyChannel(asyncio.get_running_loop(), frame_interval=LONG)
        channel.put(ReplyEvent.NOTICE, "Dropped the 2 oldest turns")
        channel.put_text("One")
        channel.put_text(" two")
        channel.put(ReplyEvent.NOTICE, "The device is slow")
        channel.put_text(" three")
        channel.put(ReplyEvent.DONE)
        return await take(channel, 5)

    assert asyncio.run(main()) == [
        (ReplyEvent.NOTICE, "Dropped the 2 oldest turns", 0),
        (ReplyEvent.TEXT, "One two", 2),
        (ReplyEvent.NOTICE, "The device is slow", 0),
        (ReplyEvent.TEXT, " three", 1),
        (ReplyEvent.DONE, "", 0),
    ]


def test_the_first_word_shows_when_it_ends_not_a_frame_later():
    """The word-wrap holds a word until it ends: the text after a handover that showed nothing
    comes at once (with the frames' pacing it came 0.2 s, ~20 llama.cpp tokens, later)."""

    class Screen:  # what show_reply gave the screen
        def __init__(self):
            self.text = ""

        def piece(self, text, tokens):
            self.text += text

        def notice(self, line, during_reply):
            pass

        def end(self, tail):
            self.text += tail

    async def main():
        channel = ReplyChannel(asyncio.get_running_loop(), frame_interval=LONG)
        screen = Screen()
        renderer = ReplyRenderer(color=False, wrap=WordWrap(lambda: 80, len(ASSISTANT_PREFIX)))
        showing = asyncio.ensure_future(show_reply(channel, renderer, Console(io.StringIO()), screen))
        channel.put_text("Once")  # held: it may go on
        channel_took = asyncio.get_running_loop().time()
        while screen.text != ASSISTANT_PREFIX:
            await asyncio.sleep(0.01)
        channel.put_text(" upon")
        while "Once" not in screen.text:  # a frame later would be LONG
            assert asyncio.get_running_loop().time() - channel_took < 5, screen.text
            await asyncio.sleep(0.01)
        shown_then = screen.text
        channel.put(ReplyEvent.DONE)
        await asyncio.wait_for(showing, 5)
        return shown_then, screen.text

    shown_then, at_the_end = asyncio.run(main())
    assert shown_then == ASSISTANT_PREFIX + "Once "
    assert at_the_end.startswith(ASSISTANT_PREFIX + "Once upon")


def test_text_after_a_pause_longer_than_a_frame_comes_when_it_comes():
    """A piece put before its frame is due does not wake the loop (it looks at the frame's time);
    one put after a pause (a slow device, a notice being saved) must still reach it."""

    async def main():
        channel = ReplyChannel(asyncio.get_running_loop(), frame_interval=FRAME)
        channel.put_text("Hello")
        first = await take(channel, 1)
        await asyncio.sleep(2 * FRAME)  # nothing comes for two frames
        threading.Thread(target=channel.put_text, args=(" again",)).start()
        second = await take(channel, 1)  # (a put that woke nobody would time out here)
        channel.put_text(" and")  # within the frame: it waits for the frame, then comes
        third = await take(channel, 1)
        return first + second + third

    assert asyncio.run(main()) == [
        (ReplyEvent.TEXT, "Hello", 1),
        (ReplyEvent.TEXT, " again", 1),
        (ReplyEvent.TEXT, " and", 1),
    ]
