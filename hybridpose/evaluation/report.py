"""One self-contained HTML page (images embedded, CSS inline) from an evaluation folder."""
from __future__ import annotations

import base64
import math
from html import escape
from pathlib import Path

import pandas as pd

from ..atomic import write_text
from .metrics import DISPLAY_NAMES, level_filename

PERCENT_METRICS = {
    "top1": "top-1 %",
    "top1_all": "top-1 all %",
    "top5": "top-5 %",
    "top5_all": "top-5 all %",
    "macro_f1": "macro F1 %",
}
# Files the page shows in their own section; every other PNG goes under "More figures".
REVIEW_PNGS = {"top_losses.png"}
SCROLL_ROWS = 25

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; background: #f4f5f7; color: #1d2330; line-height: 1.45; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; min-height: 100vh; }
h1 { font-size: 28px; margin: 8px 0 4px; }
h2 { font-size: 21px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #d8dce4; }
h3 { font-size: 16px; margin: 20px 0 8px; }
p.meta, p.note, figcaption { color: #59627a; font-size: 14px; }
nav { font-size: 14px; margin: 8px 0 16px; }
nav a { margin-right: 14px; color: #2456c5; text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #d8dce4; border-radius: 8px; padding: 10px 16px; min-width: 150px; background: #fafbfd; }
.card .level { font-size: 13px; color: #59627a; }
.card .value { font-size: 26px; font-weight: 600; }
.card .sub { font-size: 12px; color: #59627a; }
.scroll { max-height: 560px; overflow: auto; border: 1px solid #e3e6ec; border-radius: 6px; }
table.data { border-collapse: collapse; font-size: 13.5px; margin: 6px 0; }
table.data th, table.data td { padding: 5px 10px; border-bottom: 1px solid #e3e6ec; text-align: right; }
table.data th { background: #eef1f6; position: sticky; top: 0; font-weight: 600; white-space: nowrap; }
table.data td:first-child, table.data th:first-child { text-align: left; }
table.data td.text { text-align: left; overflow-wrap: anywhere; max-width: 520px; }
table.data tbody tr:nth-child(even) { background: #f8f9fb; }
table.data tbody tr:hover { background: #e9f0ff; }
figure { margin: 12px 0 28px; }
.figure-box { overflow: auto; border: 1px solid #e3e6ec; border-radius: 6px; padding: 6px; background: #fff; }
.figure-box img { max-width: 100%; height: auto; display: block; cursor: zoom-in; }
.figure-box img.zoom { max-width: none; cursor: zoom-out; }
details summary { cursor: pointer; font-weight: 600; margin: 10px 0; }
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(path: Path, caption: str) -> str:
    # Click toggles natural size: large confusion matrices stay readable.
    return (
        f'<figure><div class="figure-box"><img src="{_data_uri(path)}" alt="{escape(caption)}" '
        f"onclick=\"this.classList.toggle('zoom')\"></div>"
        f"<figcaption>{escape(caption)} (click to toggle full size)</figcaption></figure>"
    )


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _table(frame: pd.DataFrame, *, float_format: str = "{:.1f}") -> str:
    html = frame.to_html(index=False, na_rep="–", float_format=float_format.format, classes="data", border=0)
    text = {j for j, col in enumerate(frame.columns) if not pd.api.types.is_numeric_dtype(frame[col])}
    html = _mark_text_columns(html, text)
    return f'<div class="scroll">{html}</div>' if len(frame) > SCROLL_ROWS else html


def _mark_text_columns(html: str, columns: set[int]) -> str:
    """Give the cells of text columns class="text" (left-aligned); numbers stay right-aligned."""
    rows = html.split("<tr>")
    for r, row in enumerate(rows):
        cells = row.split("<td>")
        if len(cells) > 1:
            rows[r] = cells[0] + "".join(
                ('<td class="text">' if j in columns else "<td>") + cell for j, cell in enumerate(cells[1:])
            )
    return "<tr>".join(rows)


def _section(anchor: str, heading: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{escape(note)}</p>' if note else ""
    return f'<section id="{anchor}"><h2>{escape(heading)}</h2>{note_html}{body}</section>'


def _percent(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    frame = frame.copy()
    for col in columns:
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce") * 100
    return frame.rename(columns=columns)


def _branch_names(frame: pd.DataFrame) -> pd.DataFrame:
    if "branch" in frame.columns:
        frame = frame.assign(branch=frame["branch"].map(lambda b: DISPLAY_NAMES.get(b, b)))
    return frame


# ---------------------------------------------------------------- sections


def _header(title: str, summary: dict) -> str:
    meta = []
    if summary.get("n_photos") is not None:
        meta.append(f"{summary['n_photos']} photos")
    if summary.get("levels"):
        meta.append("levels (finest first): " + ", ".join(summary["levels"]))
    if summary.get("best_branch_name"):
        meta.append(f"shipped prediction: {summary['best_branch_name']}")
    if summary.get("skeleton"):
        meta.append(f"skeleton: {summary['skeleton']}")
    cards = []
    for level, m in (summary.get("headline") or {}).items():
        top1, top5, f1 = (m.get(k) for k in ("top1", "top5", "macro_f1"))
        sub = " · ".join(s for s in (_pct("top-5", top5), _pct("macro F1", f1)) if s)
        cards.append(
            f'<div class="card"><div class="level">{escape(level)} top-1</div>'
            f'<div class="value">{_fmt_pct(top1)}</div><div class="sub">{escape(sub)}</div></div>'
        )
    return (
        f"<h1>{escape(title)}</h1><p class=\"meta\">{escape(' · '.join(meta))}</p>"
        + (f'<div class="cards">{"".join(cards)}</div>' if cards else "")
    )


def _fmt_pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _pct(label: str, value: float | None) -> str:
    return "" if value is None else f"{label} {_fmt_pct(value)}"


def _metrics_section(out: Path) -> str:
    frame = _read_csv(out / "metrics.csv")
    if frame is None:
        return ""
    frame = _percent(_branch_names(frame), PERCENT_METRICS)
    note = (
        "top-1, top-5 and macro F1 count only photos where the branch answered; "
        "'all' columns count abstentions (no person found for the keypoint branch) as wrong. "
        "Out-of-fold predictions: every photo is scored by a model that did not train on it."
    )
    return _section("metrics", "Metrics per branch and level", _table(frame), note)


def _ablation_section(out: Path) -> str:
    frame = _read_csv(out / "ablation.csv")
    if frame is None or frame.empty:
        return ""
    cols = {c: f"{c} %" for c in frame.columns if c != "branch"}
    return _section("ablation", "Ablation: what each stage adds", _table(_percent(frame, cols)))


def _yoga_section(out: Path) -> str:
    frame = _read_csv(out / "yoga82_table.csv")
    if frame is None or frame.empty:
        return ""
    note = "Laid out like the Yoga-82 paper's results table, in percent; every photo counts (abstention = wrong)."
    return _section("yoga82", "Yoga-82 table", _table(frame), note)


def _rules_section(summary: dict) -> str:
    fired = summary.get("rules_fired") or {}
    if not fired:
        return ""
    frame = pd.DataFrame({"rule": list(fired), "photos": list(fired.values())})
    return _section("rules", "Rules that fired", _table(frame))


def _found_section(summary: dict) -> str:
    bands = summary.get("found") or []
    if not bands:
        return ""
    note = ("Clips by the share of their sampled frames in which the pose model found a skeleton (a hand, a body); "
            "the keypoint statistics use only those frames, and a clip with none is decided by the image branch. "
            "Per clip: the found column of the predictions.")
    return _section("found", "Frames with a skeleton", _table(pd.DataFrame(bands)), note)


def _people_section(summary: dict) -> str:
    bands = summary.get("people") or []
    if not bands:
        return ""
    others = summary.get("other_people")
    note = (f"Labelled photos by the number of people the pose model found in them. A photo's label belongs to one "
            f"person: the {summary.get('person_scored', 'largest')} one (fit --person) is the row scored; top-1 is "
            "that row's final label.")
    if others:
        note += f" The {others} other people found are not scored: other_people.csv lists them with their labels."
    return _section("people", "People per photo", _table(pd.DataFrame(bands)), note)


def _per_class_section(out: Path, levels: list[str], branch_name: str) -> str:
    parts = []
    for level in levels:
        frame = _read_csv(out / level_filename("per_class", level, ".csv"))
        if frame is None or frame.empty:
            continue
        frame = frame.sort_values("f1", kind="stable")
        frame = _percent(frame, {"precision": "precision %", "recall": "recall %", "f1": "F1 %"})
        parts.append(
            f"<details open><summary>{escape(level)} ({len(frame)} classes)</summary>"
            f"{_table(frame)}</details>"
        )
    note = f"{branch_name}; worst F1 first."
    return _section("per-class", "Per-class precision / recall", "".join(parts), note) if parts else ""


def _confusion_section(out: Path, levels: list[str]) -> tuple[str, set[str]]:
    parts, shown = [], set()
    for level in levels:
        name = level_filename("confusion", level, ".png")
        if (out / name).is_file():
            parts.append(_figure(out / name, f"Confusion matrix, {level}: colour = fraction of the true class, numbers = photos"))
            shown.add(name)
    body = _section("confusion", "Confusion matrices", "".join(parts)) if parts else ""
    return body, shown


def _top_losses_section(out: Path) -> str:
    parts = []
    if (out / "top_losses.png").is_file():
        parts.append(_figure(out / "top_losses.png", "Most confidently wrong photos (caption: true class / predicted class and its probability)"))
    frame = _read_csv(out / "top_losses.csv")
    if frame is not None and not frame.empty:
        parts.append(_table(frame, float_format="{:.3f}"))
    elif frame is not None:
        parts.append('<p class="note">No wrong predictions.</p>')
    note = "Largest cross-entropy of the true class: look for label errors, occlusions and unusual viewpoints."
    return _section("top-losses", "Top losses", "".join(parts), note) if parts else ""


def _duplicates_section(out: Path) -> str:
    frame = _read_csv(out / "duplicates_across_classes.csv")
    if frame is None:
        return ""
    if frame.empty:
        body = '<p class="note">No near-duplicate photos carry different labels.</p>'
    else:
        n = frame["group"].nunique()
        body = f'<p class="note">{n} groups.</p>' + _table(frame)
    note = "Near-duplicate photos (same group in folds.csv) filed under different classes: one label is likely wrong."
    return _section("duplicates", "Near-duplicates across classes", body, note)


def _caption_for(name: str, captions: dict) -> str:
    return captions.get(name) or Path(name).stem.replace("_", " ")


def _extras_section(out: Path, shown: set[str], summary: dict) -> str:
    captions = summary.get("captions") or {}
    extras = sorted(p for p in out.glob("*.png") if p.name not in shown and p.name not in REVIEW_PNGS)
    if not extras:
        return ""
    return _section("more", "More figures", "".join(_figure(p, _caption_for(p.name, captions)) for p in extras))


def _levels(out: Path, summary: dict) -> list[str]:
    levels = summary.get("levels")
    if levels:
        return list(reversed(levels))  # coarse to fine reads best
    return sorted(p.stem[len("per_class_"):] for p in out.glob("per_class_*.csv"))


def _nav(sections: list[str]) -> str:
    links = [
        ("metrics", "Metrics"), ("ablation", "Ablation"), ("yoga82", "Yoga-82"), ("rules", "Rules"), ("found", "Frames found"), ("people", "People"),
        ("per-class", "Per class"), ("confusion", "Confusion"), ("top-losses", "Top losses"),
        ("duplicates", "Duplicates"), ("more", "More figures"),
    ]
    body = "".join(sections)
    return "<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in links if f'id="{a}"' in body) + "</nav>"


def write_report(out_dir: str | Path, summary: dict, *, title: str) -> Path:
    """Write out_dir/report.html from the tables and figures in out_dir; return its path."""
    out = Path(out_dir)
    levels = _levels(out, summary)
    confusion_html, shown = _confusion_section(out, levels)
    sections = [
        _metrics_section(out),
        _ablation_section(out),
        _yoga_section(out),
        _rules_section(summary),
        _found_section(summary),
        _people_section(summary),
        _per_class_section(out, levels, summary.get("best_branch_name", "")),
        confusion_html,
        _top_losses_section(out),
        _duplicates_section(out),
        _extras_section(out, shown, summary),
    ]
    sections = [s for s in sections if s]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body><main>"
        f"{_header(title, summary)}{_nav(sections)}{''.join(sections)}"
        "</main></body></html>\n"
    )
    path = out / "report.html"
    write_text(path, page)
    return path
