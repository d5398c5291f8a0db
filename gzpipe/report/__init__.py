"""`gzpipe report`: the whole study on one page.

``<out>/model_comparison/``: ``comparison_table.csv`` (one row per finished model - 5 backbones, 10 boosters,
3 ensembles when all ran), ``dl_vs_gb_comparison.csv`` (each backbone beside its XGBoost and LightGBM), the
figures (``metrics_by_model.png``, ``per_task_heatmap.png``, ``predicted_vs_true.png``, ``training_curves.png``)
and ``report.html``, a self-contained page (images embedded) to open in a browser.
"""

from gzpipe.report.build import run_report

__all__ = ["run_report"]
