#!/usr/bin/env python3
"""Backup of an unchanged source, for every tool of a finished harness run.

    benches/harness/unchanged.py WORK [--tools LIST] [--adapters FILE]...
                                 [--reps N] [--bench-dir DIR]

The shared harness (bench.py) backs up a freshly re-exported source every
day; it has no step where nothing changed, which is what most daily backups
of a quiet account are, and where a tool's cost is its metadata walk and
snapshot bookkeeping, not its data path. This script adds that step to a
work directory bench.py left behind (`WORK/src`, each tool's `WORK/<tool>/repo`):
each tool's `backup` command runs on the untouched `WORK/src`, `--reps` times
(default 3), tools interleaved with the order rotated per repetition, each
run under bench.py's own `timed()` (wall, user+sys CPU, peak RSS through
/usr/bin/time -v) and logged to `WORK/<tool>/log.txt`, as bench.py does.

The snapshot time is the day after the last one bench.py backed up
(results.json args.days + 1, through bench.py's `sim_ts`). Every repetition
adds a snapshot to each repository, so the work directory is left with
`--reps` more snapshots than bench.py made.

--tools and --adapters default to those recorded in WORK/results.json; give
the same ones as the harness run otherwise. bench.py is imported from
--bench-dir, else $ARCA_SHARED_BENCH, else ../shared/bench next to this
repository. Adapter files are loaded exactly as bench.py loads them.

Prints, per tool: median wall and CPU, MB/s (bytes of WORK/src / median
wall), peak RSS, repository growth per backup; and for each arca* tool the
ratio best peer wall / its wall (peers: tools whose name does not start
with "arca" and whose backups all succeeded; above 1 means arca is faster). Writes WORK/unchanged.json.
Exits 1 if any backup failed (its output is in the tool's log.txt).
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fail(msg):
    sys.exit("unchanged.py: " + msg)


def bench_dir(arg):
    if arg:
        return arg, "--bench-dir"
    if os.environ.get("ARCA_SHARED_BENCH"):
        return os.environ["ARCA_SHARED_BENCH"], "ARCA_SHARED_BENCH"
    return os.path.join(REPO_ROOT, "..", "shared", "bench"), "the default ../shared/bench"


def import_bench(d, origin):
    path = os.path.join(d, "bench.py")
    if not os.path.isfile(path):
        fail("no bench.py in %s (from %s); point --bench-dir or ARCA_SHARED_BENCH at the "
             "shared bench directory" % (os.path.abspath(d), origin))
    # The shared bench directory is read-only to us: no __pycache__ there.
    sys.dont_write_bytecode = True
    spec = importlib.util.spec_from_file_location("bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_adapters(bench, files):
    # As bench.py main(): exec with CmdAdapter and PASSWORD, merge ADAPTERS.
    for f in files:
        if not os.path.isfile(f):
            fail("adapter file %s not found" % f)
        ns = {"CmdAdapter": bench.CmdAdapter, "PASSWORD": bench.PASSWORD}
        exec(compile(open(f).read(), f, "exec"), ns)
        bench.ADAPTERS.update(ns.get("ADAPTERS", {}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", help="work directory of a finished bench.py run")
    ap.add_argument("--tools", default=None, help="comma-separated (default: results.json args.tools)")
    ap.add_argument("--adapters", action="append", default=None,
                    help="adapter file, as for bench.py (default: results.json args.adapters)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bench-dir", default=None)
    args = ap.parse_args()
    if args.reps < 1:
        fail("--reps must be at least 1")

    work = os.path.abspath(args.work)
    src = os.path.join(work, "src")
    if not os.path.isdir(src):
        fail("%s has no src/: give the work directory of a finished bench.py run" % work)
    rpath = os.path.join(work, "results.json")
    if not os.path.isfile(rpath):
        fail("%s has no results.json: the bench.py run did not finish" % work)
    with open(rpath) as f:
        prev = json.load(f)
    pargs = prev.get("args", {})
    if "days" not in pargs:
        fail("%s has no args.days" % rpath)
    tools_arg = args.tools or pargs.get("tools")
    if not tools_arg:
        fail("no --tools given and none in %s" % rpath)
    adapters = args.adapters if args.adapters is not None else pargs.get("adapters", [])

    bench = import_bench(*bench_dir(args.bench_dir))
    load_adapters(bench, adapters)

    tools = []
    for t in tools_arg.split(","):
        if t not in bench.ADAPTERS:
            fail("unknown tool %r (known: %s); pass the run's --adapters" % (t, ", ".join(sorted(bench.ADAPTERS))))
        a = bench.ADAPTERS[t]
        if not a.available():
            print("!! %s not installed, skipped" % t, flush=True)
            continue
        repo = os.path.join(work, t, "repo")
        if not os.path.isdir(repo):
            fail("%s has no repository for %s (%s): was it in the run's --tools?" % (work, t, repo))
        tools.append(a)
    if not tools:
        fail("no tool to run")

    day = int(pargs["days"]) + 1
    ts, tsiso = bench.sim_ts(day)
    nbytes = bench.tree_bytes(src)
    nfiles = sum(len(fs) for _, _, fs in os.walk(src))
    res = {"work": work, "src_bytes": nbytes, "src_files": nfiles, "day": day, "ts": ts,
           "reps": args.reps, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "tools": {}}
    before = {}
    for a in tools:
        w = os.path.join(work, a.name)
        before[a.name] = bench.du(os.path.join(w, "repo"))
        res["tools"][a.name] = {"runs": []}

    # Archive names unique per repetition and per invocation: borg refuses
    # a second archive of the same name.
    stamp = time.strftime("%Y%m%dT%H%M%S")
    print("== backup of the unchanged source (%.1f MB, %d files), snapshot time %s, %d reps" % (
        nbytes / 1e6, nfiles, ts, args.reps), flush=True)
    for rep in range(args.reps):
        k = rep % len(tools)
        for a in tools[k:] + tools[:k]:
            w = os.path.join(work, a.name)
            cmd = a.cmd("backup", repo=os.path.join(w, "repo"), work=w, src=src, day=day, ts=ts, tsiso=tsiso,
                        name="day-%03d-unchanged-%s-%d" % (day, stamp, rep))
            r = bench.timed(cmd, a.env(w), os.path.join(w, "log.txt"))
            r["rep"] = rep
            r["mbps"] = nbytes / 1e6 / r["wall"]
            res["tools"][a.name]["runs"].append(r)
            tag = "" if r["rc"] == 0 else "  !! rc=%d (see %s/log.txt)" % (r["rc"], w)
            print("  %-12s rep %d  wall %7.2fs  cpu %7.2fs  rss %7.1f MB  load %.1f%s" % (
                a.name, rep, r["wall"], r["cpu"], r.get("rss_mb", 0), r["load1"], tag), flush=True)

    for a in tools:
        t = res["tools"][a.name]
        runs = t["runs"]
        t["median_wall"] = statistics.median(r["wall"] for r in runs)
        t["median_cpu"] = statistics.median(r["cpu"] for r in runs)
        t["mbps"] = nbytes / 1e6 / t["median_wall"]
        t["peak_rss_mb"] = max(r.get("rss_mb", 0) for r in runs)
        t["failed"] = sum(1 for r in runs if r["rc"] != 0)
        t["repo_growth_per_backup"] = (bench.du(os.path.join(work, a.name, "repo")) - before[a.name]) / len(runs)

    # A failed backup's wall time says nothing: such a tool is no best peer.
    peers = [a.name for a in tools if not a.name.startswith("arca") and not res["tools"][a.name]["failed"]]
    ours = [a.name for a in tools if a.name.startswith("arca")]
    res["ratios"] = {}
    if peers:
        best = min(peers, key=lambda p: res["tools"][p]["median_wall"])
        for t in ours:
            res["ratios"][t] = {"best_peer": best,
                                "best_peer_wall_over_wall": res["tools"][best]["median_wall"] / res["tools"][t]["median_wall"]}
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(os.path.join(work, "unchanged.json"), "w") as f:
        json.dump(res, f, indent=1)

    print()
    print("| tool (unchanged source, %d reps) | wall s (median) | cpu s (median) | MB/s | peak RSS MB | repo growth per backup kB |"
          % args.reps)
    print("|---|---|---|---|---|---|")
    for a in tools:
        t = res["tools"][a.name]
        print("| %s%s | %.2f | %.2f | %.1f | %.0f | %.1f |" % (
            a.name, " (rc!=0)" if t["failed"] else "", t["median_wall"], t["median_cpu"], t["mbps"],
            t["peak_rss_mb"], t["repo_growth_per_backup"] / 1e3))
    print()
    for t, r in res["ratios"].items():
        print("%s: best peer %s wall / %s wall = %.2f" % (t, r["best_peer"], t, r["best_peer_wall_over_wall"]))
    if not peers:
        print("no peer with a successful backup among the tools: no ratio")
    print("written: %s" % os.path.join(work, "unchanged.json"))
    if any(res["tools"][a.name]["failed"] for a in tools):
        sys.exit(1)


if __name__ == "__main__":
    main()
