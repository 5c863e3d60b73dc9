from keras_attention.docs import BEGIN, END, RESULTS_TABLES, recipes_of, render_readme, render_results
from tests.helpers import REPO_ROOT


def test_readme_model_table_is_generated_and_current():
    text = (REPO_ROOT / "README.md").read_text()
    assert BEGIN in text and END in text
    assert render_readme(text) == text, "README model table is stale: run `python -m keras_attention.docs`"
    assert "| `se_resnet50` |" in text


def test_results_table_is_generated_from_the_registry_and_current():
    text = (REPO_ROOT / "docs" / "results.md").read_text()
    assert all(f"<!-- {marker}:begin -->" in text for marker in RESULTS_TABLES)
    assert render_results(text) == text, "docs/results.md is stale: run `python -m keras_attention.docs`"


def test_every_trained_weight_is_in_a_results_table():
    from keras_attention.weights import get_pretrained_cfg, list_pretrained

    ours = [get_pretrained_cfg(n) for n in list_pretrained()]
    ours = [c for c in ours if c["format"] == "keras"]
    assert ours
    text = (REPO_ROOT / "docs" / "results.md").read_text()
    for cfg in ours:
        recipes = {r for value in RESULTS_TABLES.values() for r in recipes_of(value)}
        assert cfg["source"]["recipe"].split("/")[-1] in recipes, cfg["name"]
        assert f"| `{cfg['name']}` |" in text, cfg["name"]
