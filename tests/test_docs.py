from keras_attention.docs import BEGIN, END, RESULTS_BEGIN, render_readme, render_results
from tests.helpers import REPO_ROOT


def test_readme_model_table_is_generated_and_current():
    text = (REPO_ROOT / "README.md").read_text()
    assert BEGIN in text and END in text
    assert render_readme(text) == text, "README model table is stale: run `python -m keras_attention.docs`"
    assert "| `se_resnet50` |" in text


def test_results_table_is_generated_from_the_registry_and_current():
    text = (REPO_ROOT / "docs" / "results.md").read_text()
    assert RESULTS_BEGIN in text
    assert render_results(text) == text, "docs/results.md is stale: run `python -m keras_attention.docs`"
