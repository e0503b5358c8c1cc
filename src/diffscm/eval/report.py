"""Write generated sections into markdown files (between ``<!-- key:start -->`` and ``<!-- key:end -->``)."""
from __future__ import annotations

import re
from pathlib import Path

from ..files import write_text_atomic
from ..markdown import md_table  # noqa: F401  (re-exported: reports build their tables with it)


def write_section(path: str | Path, key: str, markdown: str) -> None:
    """Replace (or append) the section ``key`` of ``path`` atomically, leaving the rest of the file untouched."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(path, text.lstrip("\n"))


def fmt(m: dict | None, digits: int = 3) -> str:
    """``mean [low, high]``; KID as ``mean ± subset std [per-seed range]`` (×10³)."""
    if not m:
        return "—"
    if "std" in m:
        k = 1e3
        return f"{m['mean'] * k:.2f} ± {m['std'] * k:.2f} [{m['ci_low'] * k:.2f}, {m['ci_high'] * k:.2f}]"
    return f"{m['mean']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"


TABLE_COLUMNS = [("effectiveness", "effectiveness ↑", 3), ("composition_l1_1", "composition L1 m=1 ↓", 2),
                 ("composition_l1_10", "composition L1 m=10 ↓", 2), ("reversibility_l1", "reversibility L1 ↓", 2),
                 ("cld", "CLD (0.8/0.2) ↓", 3), ("cld_equal_weights", "CLD (0.5/0.5) ↓", 3),
                 ("kid_oracle", "KID ×10³ (oracle features) ↓", 2), ("fid_oracle", "FID (oracle features) ↓", 2),
                 ("images_per_s", "images/s ↑", 2)]


def results_table(results: list[dict]) -> str:
    """Markdown table: one row per method, metrics as mean [95% CI]."""
    rows = []
    for r in results:
        comp_n = r["metrics"].get("composition_l1_10", {}).get("n", "—")
        rows.append([f"{r['method']} ({describe(r['settings'])})", f"{r['n']} (m=10: {comp_n})"]
                    + [fmt(r["metrics"].get(k), d) for k, _, d in TABLE_COLUMNS])
    return md_table(["method", "n"] + [h for _, h, _ in TABLE_COLUMNS], rows)


def describe(settings: dict) -> str:
    if settings.get("method") == "diffscm":
        s = ", ".join(f"{k}={v:g}" for k, v in settings["scales"].items() if v) or "no guidance"
        if settings.get("mechanism") == "conditional":
            s = "conditional, " + (", ".join(f"w={v:g}" for v in settings.get("cfg_weights", {}).values()) or "w=1") \
                + ("" if s == "no guidance" else f", {s}")
        elif settings.get("mechanism") == "paper":
            s = f"paper, {s}"
        extra = " + dyn. norm" if settings["dynamic_norm"] else ""
        inv = settings.get("inversion", "ddim")
        if inv in ("fixed-point", "exact"):
            inv = f"{inv} K={settings['inversion_iters']}"
        if settings.get("guidance") == "intervened" and s not in ("no guidance", "conditional, w=1"):
            extra += " on the intervened samples"
        elif settings.get("guidance") == "changed" and s not in ("no guidance", "conditional, w=1"):
            extra += " on the samples with a change"
        return (f"{settings['used_steps']}+{settings['used_steps']} of N={settings['steps']}, L={settings['ratio']:g}, "
                f"{s}{extra}, {inv} inversion")
    if settings.get("method") == "prototype":
        return f"c={settings['c']:g}, β={settings['beta']:g}, γ={settings['gamma']:g}, θ={settings['theta']:g}, {settings['iterations']} FISTA steps"
    return settings.get("abduction", "")
