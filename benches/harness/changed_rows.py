#!/usr/bin/env python3
"""Size of what really changed between two daily exports of an account.

    benches/harness/changed_rows.py OLD_DAY_DIR NEW_DAY_DIR

For text files (.csv, .json: one row or record per line), the lines of the
new version that the old version does not have (as a multiset) are the new
and changed rows. Other files (attachments) count whole when new or
changed. Prints their raw size and their size compressed together with
`zstd -3` (the floor the delta-storage goal compares arca's daily growth
with: at most twice this).
"""
import collections
import os
import subprocess
import sys

TEXT = (".csv", ".json")


def files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = p
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    old, new = files(sys.argv[1]), files(sys.argv[2])
    changed = bytearray()
    for rel, path in sorted(new.items()):
        with open(path, "rb") as f:
            data = f.read()
        if rel not in old:
            changed += data
            continue
        with open(old[rel], "rb") as f:
            before = f.read()
        if data == before:
            continue
        if rel.endswith(TEXT):
            seen = collections.Counter(before.splitlines(keepends=True))
            for line in data.splitlines(keepends=True):
                if seen[line] > 0:
                    seen[line] -= 1
                else:
                    changed += line
        else:
            changed += data
    z = subprocess.run(["zstd", "-3", "-c", "-q"], input=bytes(changed),
                       stdout=subprocess.PIPE, check=True).stdout
    print("new+changed rows: %.2f MB raw, %.2f MB with zstd -3"
          % (len(changed) / 1e6, len(z) / 1e6))


if __name__ == "__main__":
    main()
