#!/usr/bin/env python3
"""Denoiser step, ours against diffusers: a Markdown table and an SVG bar chart.

Merges
  * our bench reports (`cargo xtask bench ... --out DIR` writes DIR/report.json; its `model`
    rows have model, tokens, mode = dense | plan, attention_density, ms, speedup), and/or
    rows given on the command line (`--ours-row`, for numbers only kept in a README),
  * the PyTorch peer (`tools/peers_step.py` writes peers_step.json: diffusers transformer
    step with SDPA, same sizes, random weights),
matching models by family (wan / hunyuan / cogvideox, from the model names) and checking the
token counts agree.

Writes OUT/step_report.md and OUT/step.svg (one panel per model: ours dense, ours with each
plan, diffusers SDPA, and diffusers compiled when present) and prints the Markdown.

Usage:
  python3 tools/step_report.py --peers RUN/peers_step.json --ours RUN/model/report.json \\
      [--ours OTHER/report.json] [--ours-row 'wan2.1-t2v-1.3b 480p x 81f|32760|dense|1.0|2571.6'] \\
      [--sdpa default] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from xml.sax.saxutils import escape

FAMILIES = ("wan", "cogvideox", "hunyuan")
TITLES = {"wan": "Wan2.1-T2V-1.3B", "cogvideox": "CogVideoX1.5-5B", "hunyuan": "HunyuanVideo"}
COLORS = {"dense": "#1f77b4", "plan": "#2ca02c", "peer": "#ff7f0e", "compiled": "#9467bd"}


def family(name: str):
    s = (name or "").lower()
    if "hunyuan" in s:
        return "hunyuan"
    if "cog" in s:
        return "cogvideox"
    if "wan" in s:
        return "wan"
    return None


def load_ours(paths, rows):
    """Our step rows (dicts with model, tokens, mode, attention_density, ms) and provenance."""
    out, prov = [], []
    for p in paths:
        rep = json.load(open(p))
        got = rep.get("model") or []
        prov.append(dict(source=p, device=rep.get("device"), backend=rep.get("backend"),
                         dtype=rep.get("dtype"), date=rep.get("date"), commit=rep.get("commit"),
                         command=rep.get("command"), rows=len(got)))
        for r in got:
            out.append(dict(r, source=p))
    for i, text in enumerate(rows):
        parts = [x.strip() for x in text.split("|")]
        if len(parts) != 5:
            raise SystemExit(f"--ours-row needs MODEL|TOKENS|MODE|DENSITY|MS, got {text!r}")
        out.append(dict(model=parts[0], tokens=int(parts[1].replace(",", "")), mode=parts[2],
                        attention_density=float(parts[3]), ms=float(parts[4]), source=f"--ours-row {i + 1}"))
    if rows:
        prov.append(dict(source=f"{len(rows)} row(s) given with --ours-row", rows=len(rows)))
    return out, prov


def load_peers(paths):
    recs, infos = [], []
    for p in paths:
        d = json.load(open(p))
        got = d.get("records", [])
        dtypes = sorted({r.get("dtype") for r in got if r.get("dtype")})
        infos.append(dict(d.get("info", {}), source=p, dtypes="/".join(dtypes) or "?"))
        for r in got:
            recs.append(dict(r, source=p))
    return recs, infos


def ms_text(ms):
    return f"{ms / 1e3:.2f} s" if ms >= 1000 else f"{ms:.0f} ms" if ms >= 10 else f"{ms:.2f} ms"


def build(ours, peers, sdpa, allow_tiny):
    """Per family: dense row, plan rows, the chosen peer, the compiled peer, notes."""
    fams = {}
    for r in ours:
        f = family(r.get("model", ""))
        if f is None:
            continue
        e = fams.setdefault(f, dict(dense=None, plans=[], peer=None, compiled=None, peers=[], notes=[]))
        if r.get("mode") == "dense":
            e["dense"] = r  # a later file wins
        else:
            e["plans"].append(r)
    for r in peers:
        if "error" in r or (r.get("tiny") and not allow_tiny):
            continue
        f = r.get("model")
        if f not in FAMILIES:
            f = family(r.get("label", ""))
        if f is None:
            continue
        e = fams.setdefault(f, dict(dense=None, plans=[], peer=None, compiled=None, peers=[], notes=[]))
        e["peers"].append(r)
    for f, e in fams.items():
        plain = [r for r in e["peers"] if not r.get("compile")]
        comp = [r for r in e["peers"] if r.get("compile")]
        pick = lambda rs: ([r for r in rs if r.get("sdpa") == sdpa] or rs or [None])[-1]  # noqa: E731
        e["peer"], e["compiled"] = pick(plain), pick(comp)
        ref = e["dense"] or (e["plans"][0] if e["plans"] else None)
        for p in (e["peer"], e["compiled"]):
            if p is not None and ref is not None and ref["tokens"] not in (p.get("tokens"), p.get("video_tokens")):
                e["notes"].append(f"token counts differ: ours {ref['tokens']:,}, diffusers "
                                  f"{p.get('tokens'):,} (video {p.get('video_tokens'):,})")
        if e["peer"] is not None and e["peer"].get("sdpa") != sdpa:
            e["notes"].append(f"no diffusers run with SDPA '{sdpa}'; showing '{e['peer'].get('sdpa')}'")
    order = [f for f in FAMILIES if f in fams]
    return [(f, fams[f]) for f in order]


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def markdown(rows, prov, infos, sdpa):
    s = ["# Denoiser step: ours vs diffusers (PyTorch SDPA)", ""]
    for p in prov:
        if "device" in p:
            s.append(f"- ours: `{p['source']}` — {p.get('backend')} on {p.get('device')}, {p.get('dtype')}, "
                     f"{p.get('date')}, commit {p.get('commit')}, {p['rows']} step rows")
        else:
            s.append(f"- ours: {p['source']}")
    for i in infos:
        s.append(f"- diffusers: `{i['source']}` — {i.get('gpu') or i.get('device')}, {i.get('dtypes')}, torch {i.get('torch')}, CUDA {i.get('cuda')}, "
                 f"cuDNN {i.get('cudnn')}, diffusers {i.get('diffusers')}, {i.get('date')}")
    devs = {p.get("device") for p in prov if p.get("device")}
    gpus = {i.get("gpu") for i in infos if i.get("gpu")}
    if devs and gpus and devs != gpus:
        s.append(f"- **devices differ**: ours {sorted(devs)}, diffusers {sorted(gpus)}")
    s.append("- random weights, batch 1, no CFG; one transformer forward per step. "
             "`ours / diffusers` is a time ratio (above 1: ours is slower).")
    s.append("")
    comp = any(e["compiled"] for _, e in rows)
    head = "| model | tokens | ours dense ms | ours plan ms (density) | diffusers SDPA ms |"
    sep = "|---|---|---|---|---|"
    if comp:
        head += " diffusers compiled ms |"
        sep += "---|"
    head += " ours/diffusers (dense) | ours/diffusers (plan) |"
    sep += "---|---|"
    s += [head, sep]
    notes = []
    for f, e in rows:
        ref = e["dense"] or (e["plans"][0] if e["plans"] else None) or e["peer"] or e["compiled"]
        tokens = ref.get("tokens") if ref else None
        peer_ms = e["peer"]["ms"] if e["peer"] else None
        comp_ms = e["compiled"]["ms"] if e["compiled"] else None
        dense_ms = e["dense"]["ms"] if e["dense"] else None
        name = (e["peer"] or e["compiled"] or {}).get("label") or (ref or {}).get("model") or TITLES[f]
        mark = ""
        for n in e["notes"]:
            notes.append(n)
            mark += f" [{len(notes)}]"
        for plan in e["plans"] or [None]:
            cells = [
                name + mark,
                f"{tokens:,}" if tokens else "-",
                f"{dense_ms:.1f}" if dense_ms else "-",
                f"{plan['ms']:.1f} ({plan['attention_density']:.3f})" if plan else "-",
                f"{peer_ms:.1f}" if peer_ms else "-",
            ]
            if comp:
                cells.append(f"{comp_ms:.1f}" if comp_ms else "-")
            cells += [ratio(dense_ms, peer_ms), ratio(plan["ms"] if plan else None, peer_ms)]
            s.append("| " + " | ".join(cells) + " |")
    for i, n in enumerate(notes):
        s.append(f"\n[{i + 1}] {n}")
    peers = [r for _, e in rows for r in e["peers"]]
    if peers:
        s += ["", "### diffusers runs", "",
              "| model | SDPA | compile | ms (median) | min ms | steps | peak GiB | SDPA op (profiled ms) |",
              "|---|---|---|---|---|---|---|---|"]
        for r in peers:
            prof = r.get("profile") or {}
            ops = ", ".join(f"{o['op'].replace('aten::_scaled_dot_product_', '')} ({o['ms']:.0f})"
                            for o in prof.get("sdpa_ops", [])) or "-"
            s.append(f"| {r.get('label')} | {r.get('sdpa')} | {r.get('compile')} | {r['ms']:.1f} | "
                     f"{r.get('min_ms', 0):.1f} | {len(r.get('step_ms', []))} | "
                     f"{r.get('peak_allocated_gib', '-')} | {ops} |")
        s.append("")
        s.append(f"Main table: SDPA `{sdpa}` where present. Peak = torch.cuda.max_memory_allocated "
                 "(our suite samples nvidia-smi instead, which also counts the CUDA context and the "
                 "allocator's reserve).")
    return "\n".join(s) + "\n"


def svg(rows, sdpa):
    panels = []
    for f, e in rows:
        bars = []
        if e["dense"]:
            bars.append(("ours dense", e["dense"]["ms"], COLORS["dense"]))
        for p in e["plans"]:
            bars.append((f"ours plan d={p['attention_density']:.2f}", p["ms"], COLORS["plan"]))
        if e["peer"]:
            bars.append((f"diffusers {e['peer'].get('sdpa')}", e["peer"]["ms"], COLORS["peer"]))
        if e["compiled"]:
            bars.append(("diffusers compiled", e["compiled"]["ms"], COLORS["compiled"]))
        if bars:
            ref = e["dense"] or (e["plans"][0] if e["plans"] else None) or e["peer"] or e["compiled"]
            panels.append((TITLES[f], ref.get("tokens"), bars))
    pw, ph, top, bottom, left = 230, 330, 70, 80, 20
    margin = 50  # room for the first panel's slanted labels
    width = max(1, len(panels)) * pw + margin + 10
    height = ph + 20
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'font-family="sans-serif" font-size="11">',
         '<rect width="100%" height="100%" fill="white"/>',
         f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">Denoiser step time '
         f'(random weights, batch 1): ours vs diffusers (SDPA)</text>']
    lx = 20
    for name, key in (("ours dense", "dense"), ("ours plan", "plan"), ("diffusers SDPA", "peer"),
                      ("diffusers compiled", "compiled")):
        if key == "compiled" and not any(e["compiled"] for _, e in rows):
            continue
        o.append(f'<rect x="{lx}" y="30" width="12" height="12" fill="{COLORS[key]}"/>')
        o.append(f'<text x="{lx + 16}" y="40">{escape(name)}</text>')
        lx += 130
    for i, (title, tokens, bars) in enumerate(panels):
        x0 = margin + i * pw
        plot_h = ph - top - bottom
        base_y = top + plot_h
        vmax = max(v for _, v, _ in bars) * 1.15
        o.append(f'<text x="{x0 + pw / 2}" y="{top - 8}" text-anchor="middle" font-weight="bold">'
                 f'{escape(title)}{f" ({tokens:,} tokens)" if tokens else ""}</text>')
        o.append(f'<line x1="{x0 + left}" y1="{base_y}" x2="{x0 + pw - 10}" y2="{base_y}" stroke="black"/>')
        slot = (pw - left - 10) / len(bars)
        bw = min(40, slot * 0.7)
        for j, (label, v, color) in enumerate(bars):
            cx = x0 + left + slot * (j + 0.5)
            h = plot_h * v / vmax
            o.append(f'<rect x="{cx - bw / 2:.1f}" y="{base_y - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                     f'fill="{color}"><title>{escape(label)}: {v:.1f} ms</title></rect>')
            o.append(f'<text x="{cx:.1f}" y="{base_y - h - 4:.1f}" text-anchor="middle">{ms_text(v)}</text>')
            o.append(f'<text x="{cx:.1f}" y="{base_y + 12}" text-anchor="end" '
                     f'transform="rotate(-35 {cx:.1f} {base_y + 12})">{escape(label)}</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ours", action="append", default=[], help="our bench report.json (repeatable)")
    ap.add_argument("--ours-row", action="append", default=[],
                    help="MODEL|TOKENS|MODE|DENSITY|MS, e.g. 'wan2.1-t2v-1.3b 480p x 81f|32760|plan|0.338|1967.3'")
    ap.add_argument("--peers", action="append", default=[], help="peers_step.json (repeatable)")
    ap.add_argument("--sdpa", default="default", help="which diffusers SDPA variant goes in the main table")
    ap.add_argument("--allow-tiny", action="store_true", help="also use --tiny peer runs (smoke tests)")
    ap.add_argument("--out", default=None, help="write step_report.md and step.svg here")
    a = ap.parse_args(argv)
    if not a.ours and not a.ours_row and not a.peers:
        ap.error("nothing to report: give --ours, --ours-row and/or --peers")
    ours, prov = load_ours(a.ours, a.ours_row)
    peers, infos = load_peers(a.peers)
    rows = build(ours, peers, a.sdpa, a.allow_tiny)
    md = markdown(rows, prov, infos, a.sdpa)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "step_report.md"), "w") as f:
            f.write(md + "\n![step time](step.svg)\n")
        with open(os.path.join(a.out, "step.svg"), "w") as f:
            f.write(svg(rows, a.sdpa))
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
