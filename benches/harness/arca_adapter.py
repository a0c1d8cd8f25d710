# arca adapter for the shared side-by-side harness (bench.py in the shared
# workbench, which is not part of this repository):
#
#   ARCA_BIN=/var/tmp/arca-target/release/arca \
#     ../shared/bench/peers.sh run --adapters "$PWD/benches/harness/arca_adapter.py" \
#       --kind stockflow --scale 2 --days 4 --tools restic,borg,rustic,arca
#
# bench.py exec()s this file with CmdAdapter and PASSWORD in scope.
import os

_ARCA = os.environ.get("ARCA_BIN", "arca")


def _arca(name, init_flags="", extra_env=None):
    return CmdAdapter(name, {
        "version": _ARCA + " --version",
        "init": _ARCA + " --repo {repo} init" + init_flags,
        "backup": _ARCA + " --repo {repo} --no-progress backup --account bench --time '{ts}' {src}",
        "snapshots": _ARCA + " --repo {repo} snapshots",
        "restore": _ARCA + " --repo {repo} --no-progress restore latest --account bench --target {dst}",
        "check": _ARCA + " --repo {repo} --no-progress check",
        "check_full": _ARCA + " --repo {repo} --no-progress check --read-data",
        "forget_prune": _ARCA + " --repo {repo} forget {keep} --prune",
    }, env={"ARCA_PASSWORD": "{password}", "ARCA_CACHE_DIR": "{work}/cache", **(extra_env or {})},
        restored="{dst}", keep_fmt="--keep-{k} {v}")


ADAPTERS = {
    # Defaults (zstd level 1, deltas at level 3 up to depth 4).
    "arca": _arca("arca"),
    # Every chunk stored whole: the baseline the delta goals compare with.
    "arca-nodelta": _arca("arca-nodelta", " --no-delta"),
    # zstd level 6: about 4 % smaller, twice the compression CPU.
    "arca-z6": _arca("arca-z6", " --compression 6"),
    # Defaults with the key cache off (README "Key cache"): every command
    # derives the key from the password, as when it is typed at a prompt.
    # ("arca" has it on: the password comes from the environment.)
    "arca-nocache": _arca("arca-nocache", extra_env={"ARCA_KEY_CACHE": "off"}),
    # The key cache with a longer time-out than the default 15 minutes.
    "arca-keycache": _arca("arca-keycache", extra_env={"ARCA_KEY_CACHE": "1h"}),
}
