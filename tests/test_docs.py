from keras_attention.docs import BEGIN, END, render_readme
from tests.helpers import REPO_ROOT


def test_readme_model_table_is_generated_and_current():
    text = (REPO_ROOT / "README.md").read_text()
    assert BEGIN in text and END in text
    assert render_readme(text) == text, "README model table is stale: run `python -m keras_attention.docs`"
    assert "| `se_resnet50` |" in text
