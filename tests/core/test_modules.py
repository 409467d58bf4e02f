"""The import reader behind a tune trial's code digest (pipeline/tuning/objective.py)."""

from pipeline.core import modules


def test_a_trials_code_is_every_project_module_the_objective_imports():
    closure = modules.imported_closure("pipeline.tuning.objective")
    assert {"pipeline.tuning.objective", "pipeline.tuning.space", "pipeline.tuning.study",
            "pipeline.training.fitting", "pipeline.training.model", "pipeline.core.params",
            "pipeline.data.prepared"} <= closure
    assert not closure & {"pipeline.tune", "pipeline.train", "pipeline.tuning.reports"}


def test_imports_inside_functions_count_and_packages_resolve_to_their_init():
    assert "pipeline.training.fitting" in modules.project_imports("pipeline.train")
    assert modules.module_file("pipeline.core").name == "__init__.py"
    assert modules.module_file("pipeline.core.params").is_file()
