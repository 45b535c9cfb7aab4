"""Draw a canonical 12-lead ECG as clinicians read it, with the model's findings printed on it.

Standard layout on ECG grid paper: 25 mm/s, 10 mm/mV; three rows of four 2.5-s columns
(I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6) and a 10-s lead II rhythm strip; 1-mm minor and
5-mm major grid lines; a 1 mV calibration pulse at the start of each row; each lead drawn about
its own median (display only; the model sees the canonical samples). Japanese text is set in
Noto Sans CJK JP (SIL Open Font License, from the ``noto-cjk-sans-jp-regular`` package).
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np

from ecgtool.signal import LEADS, SAMPLING_RATE

MM_PER_SECOND = 25.0
MM_PER_MV = 10.0
ROW_HEIGHT_MM = 30.0
LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"
_CALIBRATION_MM = 5.0  # width of the 1 mV pulse drawn before each row (0.2 s)


def japanese_font():
    """Noto Sans CJK JP as matplotlib font properties (Japanese names on every plot)."""
    from matplotlib import font_manager
    from noto_cjk_sans_jp_regular import FONT_PATH

    path = str(FONT_PATH)
    font_manager.fontManager.addfont(path)
    return font_manager.FontProperties(fname=path)


def plot_ecg(signal: np.ndarray, out_path: str | Path, title: str, finding_lines: list[str],
             measurements=None) -> Path:
    """Write ``signal`` ((12, 5000) canonical mV) as a PNG with ``title`` and ``finding_lines``;
    with ``measurements`` (``ecgtool.measure.Measurements``), the median beat of leads II and V5
    with the fiducial points the intervals were measured between, top right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    font = japanese_font()
    # Display only: each lead's median is its baseline, as a cart's baseline filter would show it.
    signal = signal - np.median(signal, axis=1, keepdims=True)
    width_mm = _CALIBRATION_MM + 10.0 * MM_PER_SECOND
    rows = len(LAYOUT) + 1
    height_mm = rows * ROW_HEIGHT_MM
    header_mm = 12.0 + 5.0 * len(finding_lines)
    figure = plt.figure(figsize=((width_mm + 10) / 25.4, (height_mm + header_mm + 6) / 25.4), dpi=150)
    axes = figure.add_axes((5 / (width_mm + 10), 3 / (height_mm + header_mm + 6), width_mm / (width_mm + 10), height_mm / (height_mm + header_mm + 6)))
    _draw_grid(axes, width_mm, height_mm)
    samples_per_column = int(2.5 * SAMPLING_RATE)
    time_mm = np.arange(samples_per_column) / SAMPLING_RATE * MM_PER_SECOND
    for row, leads in enumerate(LAYOUT):
        baseline = height_mm - (row + 0.5) * ROW_HEIGHT_MM
        _draw_calibration(axes, baseline)
        for column, lead in enumerate(leads):
            start = column * samples_per_column
            trace = signal[LEADS.index(lead), start : start + samples_per_column]
            x = _CALIBRATION_MM + column * 2.5 * MM_PER_SECOND + time_mm
            axes.plot(x, baseline + trace * MM_PER_MV, color="black", linewidth=0.6)
            axes.text(x[0] + 1, baseline + 8, lead, fontsize=7, fontproperties=font)
            if column:
                axes.plot([x[0], x[0]], [baseline - 3, baseline + 3], color="black", linewidth=0.6)
    baseline = 0.5 * ROW_HEIGHT_MM
    _draw_calibration(axes, baseline)
    rhythm = signal[LEADS.index(RHYTHM_LEAD)]
    x = _CALIBRATION_MM + np.arange(rhythm.size) / SAMPLING_RATE * MM_PER_SECOND
    axes.plot(x, baseline + rhythm * MM_PER_MV, color="black", linewidth=0.6)
    axes.text(_CALIBRATION_MM + 1, baseline + 8, RHYTHM_LEAD, fontsize=7, fontproperties=font)
    top = 1 - 3 / (height_mm + header_mm + 6)
    figure.text(0.01, top, title, fontsize=9, fontproperties=font, va="top")
    for index, line in enumerate(finding_lines):
        figure.text(0.01, top - (6 + 5 * index) / (height_mm + header_mm + 6), line, fontsize=8, fontproperties=font, va="top")
    if measurements is not None and measurements.median_beats is not None:
        _draw_median_beat(figure, measurements, font, (height_mm + header_mm + 6), header_mm)
    return save_figure(figure, out_path, dpi=150)


# The fiducial points drawn on the median beat, with their labels.
FIDUCIALS = (("p_onset", "P"), ("qrs_onset", "QRS on"), ("qrs_offset", "J"), ("t_offset", "T end"))


def _draw_median_beat(figure, measurements, font, total_mm: float, header_mm: float) -> None:
    beats = measurements.median_beats
    rate = measurements.sampling_rate
    t = np.arange(beats.shape[1]) / rate * 1000.0
    inset = figure.add_axes((0.78, 1 - (header_mm + 1) / total_mm, 0.2, (header_mm - 6) / total_mm))
    for lead, color in (("II", "black"), ("V5", "tab:blue")):
        inset.plot(t, beats[LEADS.index(lead)], color=color, linewidth=0.7, label=lead)
    for key, label in FIDUCIALS:
        sample = measurements.fiducials.get(key)
        if sample is not None:
            inset.axvline(sample / rate * 1000.0, color="tab:red", linewidth=0.6, linestyle="--")
            inset.text(sample / rate * 1000.0, inset.get_ylim()[1], label, fontsize=5, color="tab:red", ha="center", va="bottom")
    inset.set_xticks([])
    inset.set_yticks([])
    inset.legend(fontsize=5, loc="lower right", frameon=False)
    inset.set_title("median beat (ms)", fontsize=6, fontproperties=font, pad=6)


def save_figure(figure, out_path: str | Path, dpi: int = 110) -> Path:
    """Write a matplotlib figure as a PNG atomically (a temporary file, then a rename) and close it."""
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    if out_path.is_dir():
        plt.close(figure)
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(out_path))
    temporary = out_path.with_name(f".{out_path.name}.tmp.png")
    try:
        figure.savefig(temporary, dpi=dpi)
        temporary.replace(out_path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    finally:
        plt.close(figure)
    return out_path


def _draw_grid(axes, width_mm: float, height_mm: float) -> None:
    for position in np.arange(0, width_mm + 0.01, 1.0):
        axes.axvline(position, color="#f4b6b6" if round(position) % 5 else "#e06666", linewidth=0.25 if round(position) % 5 else 0.6, zorder=0)
    for position in np.arange(0, height_mm + 0.01, 1.0):
        axes.axhline(position, color="#f4b6b6" if round(position) % 5 else "#e06666", linewidth=0.25 if round(position) % 5 else 0.6, zorder=0)
    axes.set_xlim(0, width_mm)
    axes.set_ylim(0, height_mm)
    axes.set_aspect("equal")
    axes.axis("off")


def _draw_calibration(axes, baseline: float) -> None:
    pulse = MM_PER_MV  # 1 mV
    x = [0, 1, 1, 4, 4, _CALIBRATION_MM]
    y = [baseline, baseline, baseline + pulse, baseline + pulse, baseline, baseline]
    axes.plot(x, y, color="black", linewidth=0.6)
