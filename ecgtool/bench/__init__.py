"""``ecgtool bench``: held-out figures of a bundle on a store split, beside the published ones.

``run`` computes every figure into one dict (the ``--json`` output) and gates regressions;
``report`` renders that dict as terminal tables, Markdown and a plot; ``calibration`` and
``retrieval`` hold the calibration and ``search`` figures; ``rate_pairs`` compares a bundle's
reading of the same ECG at two sampling rates; ``machine`` compares ecgtool's measurements with
the ones the ECG machines stored in the files.
"""
