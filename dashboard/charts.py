"""Every chart of the dashboard, drawn with Altair from long-format frames.

Why not st.line_chart: it drew a CI as two more lines, picked two blues for two series,
titled no axis and cut legends at 1100 px. Here a 95 % CI is always a shaded band or a
whisker, series get the categorical "tableau10" hues (blue, orange, red, teal...: no two
alike), every axis has a title that says what and in which unit, and legends sit below the
plot one entry per line, so they never need width the plot does not have. Round 0 is
named where it is drawn: the initial model, before any training.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

SCHEME = "tableau10"
HEIGHT = 300  # plot and axes; a legend below adds `legend_room`
ROUND_AXIS = "Round (0 = the initial model, before training)"
LABEL_LIMIT = 480  # px: long run names are still shown whole in a legend below the plot


def legend(title: str | None = None, symbol: str = "stroke") -> alt.Legend:
    """Below the plot, one entry per line: never wider than the chart. Lines get a line
    as their symbol (the band's pale fill would otherwise colour it), bars a square."""
    return alt.Legend(
        title=title,
        orient="bottom",
        direction="vertical",
        columns=1,
        labelLimit=LABEL_LIMIT,
        symbolType=symbol,
        symbolOpacity=1,
        symbolStrokeWidth=3,
    )


def legend_room(entries: int) -> int:
    """Pixels a bottom legend needs: Streamlit fits the whole chart, legend included, into
    the height given, so a chart's height must leave this much below the plot."""
    return 40 + 18 * entries


def colour(field: str, title: str | None = None, domain: list[str] | None = None, symbol: str = "stroke") -> alt.Color:
    scale = alt.Scale(scheme=SCHEME) if domain is None else alt.Scale(scheme=SCHEME, domain=domain)
    return alt.Color(f"{field}:N", title=title, scale=scale, legend=legend(title, symbol))


def curves_with_bands(frame: pd.DataFrame, y_title: str, series_title: str = "Run") -> alt.LayerChart:
    """Lines of `value` per `round` for each `series`, with a band from `low` to `high`
    where the series has an interval (pooled AUROC), points on every round, dashed lines
    for series whose `dashed` is true (the clinic mean beside the pooled figure)."""
    frame = frame.copy()
    if "dashed" not in frame:
        frame["dashed"] = False
    base = alt.Chart(frame).encode(
        x=alt.X("round:Q", title=ROUND_AXIS, axis=alt.Axis(tickMinStep=1, format="d")),
        color=colour("series", series_title),
    )
    band = (
        base.transform_filter("isValid(datum.low) && isValid(datum.high)")
        .mark_area(opacity=0.18)
        .encode(y=alt.Y("low:Q", title=y_title), y2="high:Q")
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
        strokeDash=alt.StrokeDash(
            "dashed:N", legend=None, scale=alt.Scale(domain=[False, True], range=[[1, 0], [5, 4]])
        ),
        tooltip=[
            alt.Tooltip("series:N", title=series_title),
            alt.Tooltip("round:Q", title="Round"),
            alt.Tooltip("value:Q", title=y_title, format=".3f"),
        ],
    )
    return (band + line).properties(height=HEIGHT + legend_room(frame["series"].nunique()))


def forest_plot(frame: pd.DataFrame) -> alt.LayerChart:
    """Final AUROC per clinic (and pooled) with its 95 % CI as a whisker; a grey rule at
    0.5, the AUROC of a coin toss. Rows: `who`, `role`, `auroc`, `low`, `high`, `text`."""
    order = frame["who"].tolist()
    y = alt.Y("who:N", title=None, sort=order, axis=alt.Axis(labelLimit=LABEL_LIMIT))
    x_scale = alt.Scale(
        domain=[min(0.4, float(frame["low"].min(skipna=True) if frame["low"].notna().any() else 0.4)), 1.0], clamp=True
    )
    # colour tells federated, held-out and pooled apart; the row names say which is which,
    # so no legend (it would take height the rows need)
    base = alt.Chart(frame).encode(y=y, color=alt.Color("role:N", scale=alt.Scale(scheme=SCHEME), legend=None))
    whisker = (
        base.transform_filter("isValid(datum.low) && isValid(datum.high)")
        .mark_rule(strokeWidth=2)
        .encode(x=alt.X("low:Q", title="AUROC of the final model (95 % CI over patients)", scale=x_scale), x2="high:Q")
    )
    dots = base.mark_point(filled=True, size=90).encode(
        x=alt.X("auroc:Q", scale=x_scale),
        tooltip=[alt.Tooltip("who:N", title="Where"), alt.Tooltip("text:N", title="AUROC [95% CI]")],
    )
    chance = alt.Chart(pd.DataFrame({"x": [0.5]})).mark_rule(color="grey", strokeDash=[4, 4]).encode(x="x:Q")
    return (whisker + dots + chance).properties(height=90 + 36 * len(frame))


def roc_chart(curves: pd.DataFrame, points: pd.DataFrame) -> alt.LayerChart:
    """ROC curves (`fpr`, `tpr` per `series`) with each curve's operating point marked."""
    axes = {
        "x": alt.X("fpr:Q", title="False-positive rate (1 − specificity)", scale=alt.Scale(domain=[0, 1])),
        "y": alt.Y("tpr:Q", title="True-positive rate (sensitivity)", scale=alt.Scale(domain=[0, 1])),
    }
    domain = list(dict.fromkeys(curves["series"]))
    lines = (
        alt.Chart(curves)
        .mark_line(interpolate="step-after")
        .encode(**axes, color=colour("series", "Validation images of", domain), order="step:Q")
    )
    marks = (
        alt.Chart(points)
        .mark_point(filled=True, size=110, shape="diamond")
        .encode(
            **axes,
            color=colour("series", "Validation images of", domain),
            tooltip=[
                alt.Tooltip("series:N", title="Where"),
                alt.Tooltip("fpr:Q", format=".2f", title="FPR"),
                alt.Tooltip("tpr:Q", format=".2f", title="Sensitivity"),
            ],
        )
    )
    chance = (
        alt.Chart(pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]}))
        .mark_line(color="grey", strokeDash=[4, 4])
        .encode(x="fpr:Q", y="tpr:Q")
    )
    return (chance + lines + marks).properties(height=HEIGHT + legend_room(len(domain)))


def reliability_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Observed share of findings against the mean predicted p(finding) per bin; the
    dashed diagonal is a perfectly calibrated model; a pale disc's area is the bin's
    images (no second legend: two legends side by side do not fit half a page)."""
    axes = {
        "x": alt.X("predicted:Q", title="Mean predicted p(finding) in the bin", scale=alt.Scale(domain=[0, 1])),
        "y": alt.Y("observed:Q", title="Share with the finding", scale=alt.Scale(domain=[0, 1])),
    }
    domain = list(dict.fromkeys(frame["series"]))
    line = alt.Chart(frame).mark_line(point=True).encode(**axes, color=colour("series", "Validation images of", domain))
    sized = (
        alt.Chart(frame)
        .mark_circle(opacity=0.35)
        .encode(
            **axes,
            color=alt.Color("series:N", scale=alt.Scale(scheme=SCHEME, domain=domain), legend=None),
            size=alt.Size("images:Q", title="Images in the bin", legend=None),  # said in the caption
            tooltip=[
                alt.Tooltip("series:N", title="Where"),
                alt.Tooltip("images:Q", title="Images"),
                alt.Tooltip("predicted:Q", format=".2f"),
                alt.Tooltip("observed:Q", format=".2f"),
            ],
        )
    )
    ideal = (
        alt.Chart(pd.DataFrame({"predicted": [0, 1], "observed": [0, 1]}))
        .mark_line(color="grey", strokeDash=[4, 4])
        .encode(x="predicted:Q", y="observed:Q")
    )
    return (ideal + line + sized).properties(height=HEIGHT + legend_room(len(domain)))


def confusion_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """The 2 x 2 confusion matrix as a heat map with its counts written in: rows `truth`,
    columns `call`, cells `images` and `text`."""
    base = alt.Chart(frame).encode(
        x=alt.X("call:N", title="The model's call at the threshold", sort=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("truth:N", title="What the image shows", sort=None, axis=alt.Axis(labelLimit=LABEL_LIMIT)),
    )
    cells = base.mark_rect().encode(color=alt.Color("images:Q", scale=alt.Scale(scheme="blues"), legend=None))
    text = base.mark_text(fontSize=16).encode(
        text="text:N", color=alt.condition("datum.share > 0.5", alt.value("white"), alt.value("black"))
    )
    return (cells + text).properties(height=220)


def stacked_bars(frame: pd.DataFrame, x_title: str, colour_title: str) -> alt.Chart:
    """Horizontal bars (`who` on the y axis, written flat) of `count` per `part`."""
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y("who:N", title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT)),
            x=alt.X("count:Q", title=x_title),
            color=colour("part", colour_title, symbol="square"),
            tooltip=[
                alt.Tooltip("who:N", title="Clinic"),
                alt.Tooltip("part:N", title=colour_title),
                alt.Tooltip("count:Q", title=x_title),
            ],
        )
        .properties(height=60 + 36 * frame["who"].nunique() + legend_room(frame["part"].nunique()))
    )


def differences_chart(frame: pd.DataFrame, x_title: str) -> alt.LayerChart:
    """Paired differences (`who`, `diff`, `low`, `high`) as points with 95 % CI whiskers
    around a grey rule at 0 (no difference)."""
    y = alt.Y("who:N", title=None, sort=frame["who"].tolist(), axis=alt.Axis(labelLimit=LABEL_LIMIT))
    base = alt.Chart(frame).encode(y=y)
    whisker = (
        base.transform_filter("isValid(datum.low) && isValid(datum.high)")
        .mark_rule(strokeWidth=2)
        .encode(x=alt.X("low:Q", title=x_title), x2="high:Q")
    )
    dots = base.mark_point(filled=True, size=80).encode(x="diff:Q")
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="grey", strokeDash=[4, 4]).encode(x="x:Q")
    return (whisker + dots + zero).properties(height=90 + 34 * len(frame))
