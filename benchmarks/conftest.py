"""Benchmarks run torch single-threaded, as DataLoader workers do, and print ratios.

Every group holds fastcollate and its references measured in the same run; at the end
a table gives, per group, the median of each and the ratios (reference / fastcollate
for torch, fastcollate / floor for the copy floor).
"""
import torch

torch.set_num_threads(1)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled or not session.benchmarks:
        return
    groups = {}
    for bench in session.benchmarks:
        groups.setdefault(bench.group, {})[bench.name.split("[")[0]] = bench.stats.median
    rows = []
    for group, by_name in sorted(groups.items(), key=lambda kv: str(kv[0])):
        ours = {k: v for k, v in by_name.items() if "fastcollate" in k}
        for name, t_ours in ours.items():
            cells = [str(group), name.replace("test_", ""), f"{t_ours * 1e6:10.1f}"]
            for kind in ("torch", "listpath", "floor"):   # listpath: per-sample lists
                refs = {k: v for k, v in by_name.items() if kind in k}
                for rname, t_ref in refs.items():
                    ratio = t_ref / t_ours if kind != "floor" else t_ours / t_ref
                    cells.append(f"{rname.replace('test_', '')}={t_ref * 1e6:.1f}us "
                                 f"({'speedup' if kind != 'floor' else 'vs floor'} "
                                 f"{ratio:.2f}x)")
            rows.append("  ".join(cells))
    terminalreporter.write_sep("=", "fastcollate ratios (median, torch single-threaded)")
    for row in rows:
        terminalreporter.write_line(row)
