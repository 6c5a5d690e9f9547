"""Summarises train_step_peers.sh's results (.jsonl) as a markdown table.

Two estimators, because the 2 cores are shared:
- median: the median over rounds of each run's median step, and the median of the per-round
  ratios to PyTorch (both peers ran back to back, under about the same load);
- with a pytorch-passive peer (OMP_WAIT_POLICY=PASSIVE), the per-round ratio to it as well;
- best: the fastest single step of each peer over all rounds, and its ratio to PyTorch's fastest.
  Load only ever adds time, so the fastest step is the closest to what the code costs on an idle
  machine. It matters most for PyTorch with 2 threads: its OpenMP workers wait for each other at
  every op, and a worker descheduled by another process stalls both, so its median under load is
  several times its best.
usage: python benches/train_step/summarize.py RESULTS.jsonl [...]
"""
import json
import statistics
import sys


def table(path):
    rows = [json.loads(l) for l in open(path)]
    peers = list(dict.fromkeys(r["peer"] for r in rows))
    by = {(r["round"], r["peer"]): r for r in rows}
    rounds = sorted({r["round"] for r in rows})
    ok = lambda r: bool(r) and "median_step_s" in r["result"]
    first = next((r["result"] for r in rows if ok(r)), {})
    print(f"{path}: {first.get('imgsz')}px, batch {first.get('batch')}, "
          f"threads {first.get('threads', first.get('rayon_num_threads'))}, {len(rounds)} rounds\n")
    passive = "pytorch-passive" in peers
    print("| peer | median s/step | x PyTorch (per round) | best s/step | x PyTorch (best) | "
          + ("x PyTorch passive (per round) | " if passive else "") + "teacher fwd | "
          "student fwd+loss | backward | update | peak RSS MB | fwd vs ORT max rel | step-1 loss, grad norm | load1 per round |")
    print("|---" * (14 if passive else 13) + "|")
    best = {p: min((s for k in rounds if ok(by.get((k, p))) for s in by[(k, p)]["result"]["steps_s"]), default=None)
            for p in peers}
    for p in peers:
        rs = [by.get((k, p)) for k in rounds]
        good = [r for r in rs if ok(r)]
        loads = ", ".join(str(r["load1_before"]) for r in rs if r)
        if not good:
            print(f"| {p} | failed or timed out |" + " |" * (12 if passive else 11) + f" {loads} |")
            continue
        med = lambda key: statistics.median(r["result"][key] for r in good)

        def per_round(ref):
            ratios = [by[(k, p)]["result"]["median_step_s"] / by[(k, ref)]["result"]["median_step_s"]
                      for k in rounds if ok(by.get((k, p))) and ok(by.get((k, ref)))]
            return f"{statistics.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})" if ratios else "-"
        ratio = per_round("pytorch")
        pratio = f"{per_round('pytorch-passive')} | " if passive else ""
        bratio = f"{best[p] / best['pytorch']:.2f}" if best.get("pytorch") else "-"
        rss = max(r["time_v_max_rss_kb"] or 0 for r in good) / 1024
        chk = next((r["result"]["forward_vs_ort_max_rel"] for r in good if "forward_vs_ort_max_rel" in r["result"]), None)
        chk = "-" if chk is None else f"{chk:.1e}"
        g = good[0]["result"]
        print(f"| {p} | {med('median_step_s'):.3f} | {ratio} | {best[p]:.3f} | {bratio} | {pratio}{med('median_teacher_fwd_s'):.3f} | "
              f"{med('median_student_fwd_loss_s'):.3f} | {med('median_backward_s'):.3f} | {med('median_update_s'):.3f} | "
              f"{rss:.0f} | {chk} | {g.get('loss_first', float('nan')):.6f}, {g.get('grad_norm_first', float('nan')):.5f} | {loads} |")
    print()


if __name__ == "__main__":
    for f in sys.argv[1:]:
        table(f)
