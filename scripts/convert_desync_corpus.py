#!/usr/bin/env python3
"""Turns the http-desync-guardian YAML corpus into sitio's own case table.

Run once when the corpus changes:
    python3 scripts/convert_desync_corpus.py ../shared/corpora/http-desync-guardian > tests/data/desync_cases.txt

Output: one case per line, TAB-separated: tier, "file: name", raw request head.
The head is the request line and header lines, each ended by CRLF, without the
final empty line; bytes outside printable ASCII are escaped as \\r \\n \\t \\\\ \\xHH.
Header strings in the YAML are read as Latin-1, so "\\xa0" means the byte 0xA0
(characters beyond Latin-1 are written as UTF-8).
"""
import glob
import os
import sys

import yaml


def escape(raw: bytes) -> str:
    out = []
    for b in raw:
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x09:
            out.append("\\t")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


def to_bytes(value) -> bytes:
    text = str(value)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")  # e.g. U+017F, a look-alike of "k"


def main(folder: str) -> None:
    print("# sitio request-smuggling cases, converted by scripts/convert_desync_corpus.py from")
    print("# aws/http-desync-guardian tests/ (Apache-2.0), commit 7dd6f37171f0a8428d259f2631aee5e7b01a1d64.")
    print("# tier<TAB>source: name<TAB>escaped request head (no final empty line, no body)")
    for path in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
        for case in yaml.safe_load(open(path, encoding="utf-8")) or []:
            version = case.get("version", "HTTP/1.1")
            line = to_bytes(case["method"]) + b" " + to_bytes(case["uri"])
            if version != "":
                line += b" " + to_bytes(version)
            head = line + b"\r\n"
            names = []
            for h in case.get("headers") or []:
                names.append(str(h["name"]).strip().lower())
                head += to_bytes(h["name"]) + b":" + to_bytes(h["value"]) + b"\r\n"
            if "host" not in names:
                head += b"Host: localhost\r\n"
            name = "%s: %s" % (os.path.basename(path), case["name"])
            name = name.replace("\t", " ").replace("\n", " ")
            print("%s\t%s\t%s" % (case["expected"]["tier"], escape(name.encode("utf-8")), escape(head)))


if __name__ == "__main__":
    main(sys.argv[1])
