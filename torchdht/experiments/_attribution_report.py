"""The attribution study's statistics and report: paired comparisons, summaries, the
conclusion (from a table of rules), the text tables and the figure."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from ._core import Writer, format_table

__all__ = ["comparisons", "conclusion", "paired_comparison", "plot", "summarise", "table"]

# Two-sided 5 % critical values of Student's t, used when scipy is absent.
_T_CRIT = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
           9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def _t_crit(df: int) -> float:
    return _T_CRIT[max(k for k in _T_CRIT if k <= df)] if df < 30 else 1.96


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Paired comparison of ``a - b`` over the same seeds, with a paired t-test.

    Args:
        a: values of the first condition, one per seed.
        b: values of the second condition for the same seeds, in the same order.

    Returns:
        ``n``, ``diff_mean``, ``diff_std``, ``wins`` (seeds with ``a > b``),
        ``t``, ``p`` (two-sided; None without scipy or with fewer than two
        seeds), ``significant`` (at 5 %, two-sided) and ``statement``.

    Example:
        >>> r = paired_comparison([97.1, 97.3, 97.0], [96.0, 96.1, 96.2])
        >>> round(r["diff_mean"], 2), r["wins"], r["significant"]
        (1.03, 3, True)
        >>> paired_comparison([1.0, 2.0], [1.0, 2.0])["significant"]
        False
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"need two equally long non-empty sequences, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = statistics.fmean(d)
    sd = statistics.stdev(d) if n > 1 else 0.0
    wins = sum(x > 0 for x in d)
    t: float | None = None
    p: float | None = None
    significant = False
    if n > 1:
        if sd > 0:
            t = mean / (sd / math.sqrt(n))
        else:
            t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        try:
            from scipy import stats as _st

            p = float(2.0 * _st.t.sf(abs(t), n - 1)) if math.isfinite(t) else (
                0.0 if t != 0 else 1.0)
            significant = p < 0.05
        except ImportError:  # pragma: no cover - scipy ships with scikit-learn
            significant = abs(t) > _t_crit(n - 1)
    if n < 2:
        statement = f"{mean:+.2f} points (1 seed: no test)"
    else:
        ptxt = f"p = {p:.3g}" if p is not None else f"|t| {'>' if significant else '<='} " \
            f"{_t_crit(n - 1)}"
        verdict = "significant" if significant else "not significant"
        statement = (f"{mean:+.2f} ± {sd:.2f} points, {wins}/{n} seeds better; paired t-test "
                     f"t = {t:.2f}, {ptxt}: {verdict} at 5 %")
    return {"n": n, "diff_mean": mean, "diff_std": sd, "wins": wins, "t": t, "p": p,
            "significant": significant, "statement": statement}


def summarise(records: list[dict[str, Any]], conds: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per condition (``conds``: objects with ``name``, ``group``, ``note``): mean,
    std and per-seed final accuracy, early accuracy, cost, mean curve."""
    rows = []
    for c in conds:
        rs = sorted((r for r in records if r["condition"] == c.name), key=lambda r: r["seed"])
        if not rs:
            continue
        accs = [r["final_acc"] for r in rs]
        points = rs[0]["eval_points"]
        early = min(range(1, len(points)), key=lambda i: abs(points[i] - points[-1] / 10))
        rows.append({
            "condition": c.name,
            "group": c.group,
            "note": c.note,
            "n_seeds": len(rs),
            "seeds": [r["seed"] for r in rs],
            "acc_mean": statistics.fmean(accs),
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "acc_per_seed": accs,
            "early_iter": points[early],
            "early_acc_mean": statistics.fmean(r["curve"][early] for r in rs),
            "ms_per_step": statistics.fmean(r["ms_per_step"] for r in rs),
            "run_seconds": statistics.fmean(r["run_seconds"] for r in rs),
            "angle_mean": statistics.fmean(r["angle_mean"] for r in rs),
            "diverged": sum(r["diverged"] for r in rs),
            "eval_points": points,
            "curve_mean": [statistics.fmean(r["curve"][i] for r in rs)
                           for i in range(len(points))],
        })
    return rows


def _by_seed(records: list[dict[str, Any]], name: str) -> dict[int, float]:
    return {r["seed"]: r["final_acc"] for r in records if r["condition"] == name}


def _compare(records: list[dict[str, Any]], a: str, b: str, why: str) -> dict[str, Any] | None:
    ra, rb = _by_seed(records, a), _by_seed(records, b)
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        return None
    out = paired_comparison([ra[s] for s in seeds], [rb[s] for s in seeds])
    return {"a": a, "b": b, "question": why, **out}


def comparisons(records: list[dict[str, Any]], summary: list[dict[str, Any]]) -> list[dict]:
    """The paired comparisons (same seeds) that the conclusion reads."""
    names = [r["condition"] for r in summary]
    pairs: list[tuple[str, str, str]] = [
        (n, "sgd", "vs plain SGD") for n in names if n != "sgd"
    ]
    lr_rows = [r for r in summary if r["group"] in ("sgd", "lr") and r["condition"] != "sgd-enc-x6"]
    best_lr = max(lr_rows, key=lambda r: r["acc_mean"])["condition"] if lr_rows else None
    grid = [r for r in summary if r["group"] == "grid" or r["condition"] == "dht"]
    best_grid = max(grid, key=lambda r: r["acc_mean"])["condition"] if grid else None
    pairs += [
        ("dht", "random", "clean: greedy vs random teacher"),
        ("dht-released", "random-released", "with the extra gradient: greedy vs random"),
        ("dht-released", "dht", "effect of the extra gradient (greedy)"),
        ("random-released", "random", "effect of the extra gradient (random)"),
        ("dht-released", "sgd-enc-x6", "released DHT vs encoder lr x6"),
    ]
    if best_lr and best_lr != "sgd":
        pairs.append(("dht-released", best_lr, "released DHT vs the best plain-SGD lr"))
        pairs.append((best_grid or "dht", best_lr, "best clean DHT vs the best plain-SGD lr"))
    out, seen = [], set()
    for a, b, why in pairs:
        if a == b or (a, b) in seen or a not in names or b not in names:
            continue
        seen.add((a, b))
        c = _compare(records, a, b, why)
        if c is not None:
            out.append(c)
    return out



# ----------------------------------------------------------------------------- conclusion

_SAID = (  # (fact, a, b, label): the comparisons the conclusion states, in order
    ("rel", "dht-released", "sgd", "Released-code DHT over SGD"),
    ("clean", "dht", "sgd", "Clean DHT over SGD"),
    ("rnd", "random", "sgd", "Random cap over SGD"),
    ("ctrl", "random-released", "sgd", "Extra encoder gradient with a random teacher over SGD"),
    ("greedy", "dht-released", "random-released",
     "Greedy over random, both with the extra gradient"),
    ("enc", "sgd-enc-x6", "sgd", "Encoder lr x6 over SGD"),
)
_SIX = "extra encoder gradient (1 + k = 6 gradients per step where SGD gets one)"

Rule = tuple[Callable[[dict[str, Any]], bool], str]
"""When the facts hold, this line (``str.format`` of the facts)."""

_TAIL: tuple[Rule, ...] = (
    (lambda f: f["greedy_sig"] and f["greedy_d"] < 0,
     "; the greedy teacher takes {greedy_loss:.2f} points away (significant)"),
    (lambda f: f["greedy_sig"], "; the greedy teacher adds {greedy_d:+.2f} (significant)"),
    (lambda f: True, "; the greedy teacher adds nothing significant"),
)
_VERDICTS: tuple[tuple[Rule, ...], ...] = (  # one numbered line per group: its first rule
    ((lambda f: f["split"],
      "Of the released code's {rel_d:+.2f} point gain over SGD, the same extra encoder "
      "gradient with a random teacher (no teaching) gives {ctrl_d:+.2f} ({share_pct:.0f} %), "
      "and the greedy teacher adds {greedy_d:+.2f} on top ({greedy_word})."),),
    ((lambda f: f["split"] and f["share"] >= 1.0,
      "So the whole gain comes from the " + _SIX + ", not from data hallucination "
      "teaching{tail}."),
     (lambda f: f["split"] and f["share"] >= 0.75 and abs(f["greedy_d"]) <= 0.25 * f["rel_d"],
      "So the gain comes mainly from the " + _SIX + ", not from data hallucination "
      "teaching.{small}"),
     (lambda f: f["split"] and f["share"] < 0.5,
      "So most of the gain needs the greedy teacher: the extra encoder gradient alone does "
      "not explain it."),
     (lambda f: f["split"],
      "So the extra encoder gradient explains part of the gain and the greedy teacher "
      "another part.")),
    ((lambda f: f["rel_pos"] and f["enc"],
      "Multiplying the encoder's lr by 6, with no teacher, gives {enc_d:+.2f} ({enc_word}): "
      "a larger encoder step {enc_is} enough to obtain a gain."),
     (lambda f: not f["rel_pos"] and f["rel"] and f["rel_n"] < 2,
      "One seed only: no significance test, so no attribution is claimed; the differences "
      "above are indicative only."),
     (lambda f: not f["rel_pos"] and f["rel"],
      "The released code's DHT does not beat SGD significantly here.")),
    ((lambda f: f["clean_pos"], "The clean algorithm (Algorithm 1 as written) beats SGD."),
     (lambda f: f["clean_sig"],
      "The clean algorithm (Algorithm 1 as written) is significantly worse than SGD."),
     (lambda f: f["clean"],
      "The clean algorithm (Algorithm 1 as written) gives no significant gain over SGD.")),
    ((lambda f: f["rnd"] and not f["rnd_sig"],
      "The random cap alone has no significant effect, as the paper reports."),
     (lambda f: f["rnd"] and abs(f["rnd_d"]) < 0.1,
      "The random cap alone has a significant effect of {rnd_d:+.2f} points (tiny next to the "
      "others)."),
     (lambda f: f["rnd"], "The random cap alone has a significant effect of {rnd_d:+.2f} points.")),
    ((lambda f: f["tuned"] and not f["ahead"],
      "{indicative}Plain SGD with a larger lr ({best}, {best_acc:.2f} %) matches or beats "
      "{whom}: at the paper's lr 1e-3 the SGD baseline is under-tuned, and a gain measured "
      "against it is largely one of step size."),
     (lambda f: f["tuned"],
      "{indicative}Released-code DHT stays ahead of the best plain-SGD lr ({best}).")),
)


def _pick(rules: Sequence[Rule], facts: dict[str, Any]) -> str | None:
    return next((text.format(**facts) for when, text in rules if when(facts)), None)


def _facts(comps: dict[str, dict | None], mnist: list[dict], best: dict | None) -> dict:
    """What the verdict rules read: each comparison's diff, n, significance and words."""
    f: dict[str, Any] = {}
    for key, c in comps.items():
        f[key] = c is not None
        f[f"{key}_d"] = c["diff_mean"] if c else math.nan
        f[f"{key}_n"] = c["n"] if c else 0
        f[f"{key}_sig"] = bool(c and c["significant"])
        f[f"{key}_pos"] = f[f"{key}_sig"] and f[f"{key}_d"] > 0
        f[f"{key}_word"] = "significant" if f[f"{key}_sig"] else "not significant"
    f["split"] = f["rel_pos"] and f["ctrl"] and f["greedy"]
    f["share"] = f["ctrl_d"] / f["rel_d"] if f["split"] else math.nan
    f["share_pct"] = 100 * f["share"]
    f["greedy_loss"] = -f["greedy_d"]
    f["tail"] = _pick(_TAIL, f)
    f["small"] = (f" The greedy teacher's own contribution ({f['greedy_d']:+.2f}) is "
                  f"significant but small." if f["greedy_sig"] else "")
    f["enc_is"] = "is" if f["enc_pos"] else "is not"
    f["tuned"] = f["tuned"] and best is not None
    f["ahead"] = f["tuned_d"] > 0 and (f["tuned_sig"] or f["tuned_n"] < 2)
    f["indicative"] = "(Indicative, one seed.) " if f["tuned"] and f["tuned_n"] < 2 else ""
    if best is not None:
        teach_best = max((r["acc_mean"] for r in mnist if r["group"] in ("teacher", "grid")),
                         default=-math.inf)
        f.update(best=best["condition"], best_acc=best["acc_mean"],
                 whom="every teacher" if best["acc_mean"] >= teach_best else "released-code DHT")
    return f


def conclusion(mnist: list[dict], mcomps: list[dict], cifar: list[dict]) -> list[str]:
    """Plain sentences derived from the measurements (no claims beyond them): the stated
    comparisons (:data:`_SAID`), then one verdict per group of :data:`_VERDICTS`."""
    lines: list[str] = []
    acc = {r["condition"]: r for r in mnist}

    def say(a: str, b: str, label: str) -> dict | None:
        c = next((c for c in mcomps if c["a"] == a and c["b"] == b), None)
        if c is not None:
            lines.append(f"- {label} (`{a}` − `{b}`): {c['statement']}.")
        return c

    if mnist:
        n = mnist[0]["n_seeds"]
        lines.append(f"MNIST (MLP, {n} seed{'s' if n != 1 else ''}, paired by seed):")
        comps = {key: say(a, b, label) for key, a, b, label in _SAID}
        lr_rows = [r for r in mnist if r["group"] == "lr"]
        best = max([acc["sgd"], *lr_rows], key=lambda r: r["acc_mean"]) if "sgd" in acc else None
        if best is not None and best["condition"] != "sgd":
            comps["tuned"] = say("dht-released", best["condition"],
                                 f"Released-code DHT over the best plain-SGD lr "
                                 f"({best['condition']}, chosen on the test set)")
        else:
            comps["tuned"] = None
        grid = [r for r in mnist if r["group"] == "grid" or r["condition"] == "dht"]
        if len(grid) > 1:
            g = max(grid, key=lambda r: r["acc_mean"])
            sgd_txt = f" (SGD {acc['sgd']['acc_mean']:.2f} %)" if "sgd" in acc else ""
            lines.append(f"- Best clean DHT setting: `{g['condition']}` at {g['acc_mean']:.2f} ± "
                         f"{g['acc_std']:.2f} %{sgd_txt}; the grid "
                         f"spans {min(r['acc_mean'] for r in grid):.2f}-"
                         f"{max(r['acc_mean'] for r in grid):.2f} %.")
        lines += ["", "What causes the gain, by these measurements:"]
        facts = _facts(comps, mnist, best)
        verdicts = [v for v in (_pick(rules, facts) for rules in _VERDICTS) if v is not None]
        lines += [f"{i + 1}. {v}" for i, v in enumerate(verdicts)]
        n_tests = len(mcomps)
        lines.append(f"(Tests are uncorrected for multiplicity: with {n_tests} comparisons about "
                     f"{0.05 * n_tests:.1f} false positives at 5 % are expected by chance.)")
    if cifar:
        lines.append("")
        c = {r["condition"]: r for r in cifar}
        n = cifar[0]["n_seeds"]
        lines.append(f"CIFAR-10 sanity check (CNN-3, {cifar[0]['eval_points'][-1]} iterations, "
                     f"{n} seed{'s' if n != 1 else ''}"
                     + (": no estimate of seed noise, indicative only" if n < 2 else "")
                     + "): " + ", ".join(f"{k} {v['acc_mean']:.2f} %" for k, v in c.items())
                     + ".")
        if "sgd" in c:
            gains = {k: v["acc_mean"] - c["sgd"]["acc_mean"] for k, v in c.items() if k != "sgd"}
            lines.append("Gains over SGD: " + ", ".join(f"{k} {v:+.2f}" for k, v in gains.items())
                         + ".")
            if "sgd" in acc:
                base = acc["sgd"]["acc_mean"]
                agree = [k + (" yes" if (v > 0) == (acc[k]["acc_mean"] > base) else " no")
                         for k, v in gains.items() if k in acc]
                if agree:
                    lines.append("Same sign of the gain over SGD as on MNIST: "
                                 + ", ".join(agree) + ".")
    return lines


# ----------------------------------------------------------------------------- output


def table(rows: list[dict[str, Any]]) -> str:
    """A part's summary rows as an aligned text table."""
    return format_table(
        ("condition", "test acc % (mean ± std)", "acc @ early it", "ms/step", "angle (rad)"),
        [(r["condition"], f"{r['acc_mean']:6.2f} ± {r['acc_std']:.2f}"
          + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
          f"{r['early_acc_mean']:.2f} @ {r['early_iter']}", f"{r['ms_per_step']:.2f}",
          f"{r['angle_mean']:.4f}" if r["group"] in ("teacher", "grid") else "-")
         for r in rows])


def plot(writer: Writer, mnist: list[dict], cifar: list[dict]) -> None:
    """``attribution.png``: MNIST's final accuracies and curves, CIFAR's curves."""
    panels = (1 if mnist else 0) * 2 + (1 if cifar else 0)
    if writer.out is None or not panels:
        return
    with writer.figure("attribution.png", panels, figsize=(6.2 * panels, 5.2)) as axes:
        _draw(axes, mnist, cifar)


def _draw(axes: list[Any], mnist: list[dict], cifar: list[dict]) -> None:
    key = ("sgd", "sgd-lr-x6", "sgd-enc-x6", "random", "random-released", "dht", "dht-released")
    if mnist:
        ax = axes.pop(0)
        ys = list(range(len(mnist)))[::-1]
        colors = {"sgd": "tab:gray", "lr": "tab:blue", "teacher": "tab:red", "grid": "tab:orange"}
        for y, r in zip(ys, mnist):
            ax.errorbar(r["acc_mean"], y, xerr=r["acc_std"], fmt="o",
                        color=colors.get(r["group"], "k"), capsize=3)
            ax.scatter(r["acc_per_seed"], [y] * len(r["acc_per_seed"]), s=8, color="k",
                       alpha=0.4, zorder=3)
        if "sgd" in {r["condition"] for r in mnist}:
            ax.axvline(next(r["acc_mean"] for r in mnist if r["condition"] == "sgd"),
                       color="tab:gray", ls="--", lw=1)
        ax.set_yticks(ys, [r["condition"] for r in mnist], fontsize=7)
        ax.set_xlabel("final test accuracy (%), mean ± std, dots: seeds")
        ax.set_title("MNIST MLP: final accuracy")
        ax.grid(alpha=0.3, axis="x")
        ax = axes.pop(0)
        for r in mnist:
            if r["condition"] in key:
                ax.plot(r["eval_points"], r["curve_mean"], label=r["condition"], lw=1.4)
        finals = [r["acc_mean"] for r in mnist]
        ax.set_ylim(max(0.0, min(finals) - 8.0), min(100.0, max(finals) + 1.5))
        ax.set(xlabel="iteration", ylabel="test accuracy (%), mean over seeds",
               title="MNIST MLP: accuracy curves")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if cifar:
        ax = axes.pop(0)
        for r in cifar:
            ax.plot(r["eval_points"], r["curve_mean"], marker=".", label=r["condition"], lw=1.4)
        ax.set(xlabel="iteration", ylabel="test accuracy (%)",
               title="CIFAR-10 CNN-3 (lr 0.1), 1 seed")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
