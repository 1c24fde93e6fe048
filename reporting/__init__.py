"""Reports: the ablation report's tables, figures and pages (`zoo report`), a dataset in text."""
