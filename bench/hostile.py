"""Hostile-mail benchmark: CPU time to read mail shaped to make parsing slow.

    python bench/hostile.py                  # each shape at 100 kB, 1 MB and 25 MB
    python bench/hostile.py --sizes 1e5 2e5 4e5

Each shape is a message of about the given size, built so that a parser
whose work grows with the square of the input would spend minutes or hours
on it at the SMTP size limit (25 MiB by default): one enormous From, Subject
or Content-Type, HTML of unclosed tags or script elements, many MIME parts
(some with Content-Types of quoted semicolons).
For each it prints the process CPU time of what a worker does with every
stored message before the database (``identify``, ``content_digest`` and
``parse_message``). A time that grows tenfold from one size to the next ten
times larger is linear; a hundredfold is quadratic. It prints numbers; it
never asserts them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.mail import content_digest, identify, parse_message  # noqa: E402

HEAD = b"To: support@example.com\r\nMessage-ID: <hostile@example.org>\r\nMIME-Version: 1.0\r\n"
MULTIPART = HEAD + b"From: alice@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"


def repeated(unit: str, size: int) -> str:
    return unit * max(size // len(unit), 1)


def header(name: str, unit: str, lead: str = "") -> Callable[[int], bytes]:
    def build(size: int) -> bytes:
        others = b"" if name == "From" else b"From: alice@example.org\r\n"
        value = lead + repeated(unit, size)
        return HEAD + others + f"{name}: {value}\r\n\r\nbody\r\n".encode()
    return build


def html(unit: str) -> Callable[[int], bytes]:
    def build(size: int) -> bytes:
        return (HEAD + b"From: alice@example.org\r\nContent-Type: text/html\r\n\r\n"
                + repeated(unit, size).encode() + b"\r\n")
    return build


def parts(size: int) -> bytes:
    part = "--b\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n"
    return MULTIPART + repeated(part, size).encode() + b"--b--\r\n"


def distinct_parts(size: int) -> bytes:
    """Parts whose Content-Types are each as slow to parse as a structured header
    allowed whole can be, and each different (no two read as one)."""
    part = b'--b\r\nContent-Type: text/plain; a="' + b"\\" * 2000 + b'%06d"\r\n\r\nx\r\n'
    count = max(size // len(part), 1)
    return MULTIPART + b"".join(part % n for n in range(count)) + b"--b--\r\n"


def semicolon_parts(filler: int) -> Callable[[int], bytes]:
    """Parts that are each a multipart whose Content-Type is as long as a header
    is read, with semicolons inside a quoted parameter after ``filler`` other
    characters: the stdlib's parameter reader, run on every part for its
    boundary, spends time on each semicolon growing with the value's length."""
    def build(size: int) -> bytes:
        quoted = b"y" * filler + b";" * (8150 - filler)
        part = b'--b\r\nContent-Type: multipart/mixed; x=%06d; a="' + quoted + b'"\r\n\r\nx\r\n'
        count = max(size // len(part), 1)
        return MULTIPART + b"".join(part % n for n in range(count)) + b"--b--\r\n"
    return build


SHAPES: dict[str, Callable[[int], bytes]] = {
    "From: many addresses": header("From", "a@example.org, "),
    "From: many comments": header("From", "(x) ", "alice@example.org "),
    "Subject: encoded words": header("Subject", "w ", "=?utf-8?q?caf=C3=A9?= "),
    "Content-Type: parameters": header("Content-Type", "; p=v", "text/plain"),
    "Content-Type: backslashes": header("Content-Type", "\\\\", 'text/plain; a="'),
    "HTML: unclosed tags": html("<a "),
    "HTML: unclosed scripts": html("<script>x"),
    "MIME: many parts": parts,
    "MIME: slow distinct parts": distinct_parts,
    "MIME: parts of semicolons": semicolon_parts(0),
    "MIME: parts ending in ;": semicolon_parts(8080),
}


def read(raw: bytes) -> None:
    identify(raw)
    content_digest(raw)
    parse_message(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=float, nargs="+",
                        default=[100_000, 1_000_000, 25 * 1024 * 1024])
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes]
    print(f"{'shape':28}" + "".join(f"{s / 1e6:>12.2f} MB" for s in sizes))
    for label, build in SHAPES.items():
        row = f"{label:28}"
        for size in sizes:
            raw = build(size)
            started = time.process_time()
            read(raw)
            row += f"{time.process_time() - started:>13.3f} s"
        print(row, flush=True)


if __name__ == "__main__":
    main()
