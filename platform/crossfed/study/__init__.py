"""The cross-experiment study: does learning from several experiments together, without pooling their
data, make each experiment's models better? (`crossfed study`, `crossfed demo`, `crossfed report`)

    config.py      StudyConfig: experiments, tasks, scenarios, repeats, shared training settings; presets/
    samples.py     each experiment's events: given, or generated and reused
    plan.py        scenarios and the pre-trainings (setups) that serve them, equal budgets
    jobs.py        a pre-training's run config; a fine-tuning job (Ray task) at an experiment's site
    runner.py      run_study: samples, checks, pre-training, fine-tuning, report
    statistics.py  AUC, DeLong, mean ± SE over seeds and test set, t intervals, verdicts (numpy only)
    report.py      tables, differences, budgets rebuilt from MLflow; files; the parent run's summary
    plots.py       figures with error bands
"""
