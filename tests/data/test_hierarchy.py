"""Label hierarchies: the built-in Imagewoof one (WordNet), validation errors, mapping matrices."""

import json

import numpy as np
import pytest

from keras_attention.data.hierarchy import (Hierarchy, builtin_hierarchies, load_hierarchy,
                                            parse_hierarchy)
from tests.helpers import IMAGEWOOF, needs_imagewoof

TOY = {"levels": ["order", "family"],
       "parents": {"robin": ["passerine", "thrush"], "crow": ["passerine", "corvid"],
                   "jay": ["passerine", "corvid"], "gull": ["seabird", "laridae"]}}

HOUND, TERRIER, HUNTING, TOY_DOG = "n02087551", "n02092468", "n02087122", "n02085374"


def test_imagewoof_hierarchy_is_the_wordnet_one():
    h = load_hierarchy("imagewoof")
    assert "imagewoof" in builtin_hierarchies()
    assert h.levels == ("group", "subgroup") and h.fine_level == "breed"
    assert len(h.classes) == 10 and list(h.classes) == sorted(h.classes)
    # WordNet 3.0 (ImageNet's is_a.txt): beagle and English foxhound are hounds, the two terriers
    # terriers, all four hunting dogs; Shih-Tzu is a toy dog; dingo a wild dog
    assert h.parents["n02088364"] == (HUNTING, HOUND) and h.parents["n02089973"] == (HUNTING, HOUND)
    assert h.parents["n02093754"] == (HUNTING, TERRIER) == h.parents["n02096294"]
    assert h.parents["n02086240"] == (TOY_DOG, TOY_DOG)
    assert h.parents["n02115641"] == ("n02115335", "n02115335")
    assert h.name(HOUND).startswith("hound")
    assert len(h.level_classes("group")) == 5 and len(h.level_classes("subgroup")) == 8
    assert h.extra["source"] and h.extra["level_rule"]
    # every parent lies on the breed's recorded hypernym path
    for fine, parents in h.parents.items():
        assert set(parents) <= set(h.extra["hypernym_paths"][fine][1:]), fine


@needs_imagewoof
def test_imagewoof_hierarchy_covers_the_class_folders():
    folders = sorted(p.name for p in (IMAGEWOOF / "train").iterdir() if p.is_dir())
    assert list(load_hierarchy("imagewoof", classes=folders).classes) == folders


def test_mapping_matrix_and_coarse_labels():
    h = parse_hierarchy(TOY)
    assert h.classes == ("crow", "gull", "jay", "robin")  # sorted: the class-folder order
    assert h.level_classes("order") == ("passerine", "seabird")
    assert h.level_classes("family") == ("corvid", "laridae", "thrush")
    np.testing.assert_array_equal(h.mapping_matrix("family"),
                                  [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(h.mapping_matrix("fine"), np.eye(4))
    np.testing.assert_array_equal(h.coarse_labels([0, 1, 2, 3], "order"), [0, 1, 0, 0])
    np.testing.assert_array_equal(h.coarse_labels([3, 2, 1], "family"), [2, 0, 1])
    assert h.mapping_matrix("order").sum(axis=1).tolist() == [1, 1, 1, 1]  # one parent per class


def test_class_order_is_taken_from_the_dataset():
    h = parse_hierarchy(TOY, classes=["robin", "crow", "jay", "gull"])
    np.testing.assert_array_equal(h.coarse_labels([0, 3], "order"), [0, 1])


def test_round_trip_and_files(tmp_path):
    h = parse_hierarchy({**TOY, "source": "made up", "fine_level": "species"})
    again = parse_hierarchy(json.loads(json.dumps(h.to_dict())))
    assert again == h and again.extra["source"] == "made up" and again.all_levels[-1] == "species"
    path = tmp_path / "birds.json"
    path.write_text(json.dumps(TOY))
    assert load_hierarchy(str(path)).levels == ("order", "family")
    assert isinstance(load_hierarchy(h), Hierarchy)


@pytest.mark.parametrize("mapping, match", [
    ([1, 2], "must be a mapping"),
    ({"parents": TOY["parents"]}, r"missing \['levels'\]"),
    ({"levels": ["order", "order"], "parents": TOY["parents"]}, "repeats"),
    ({"levels": ["order", "family"], "parents": {**TOY["parents"], "gull": ["seabird"]}},
     r"exactly one parent .* \('gull': \['seabird'\]\)"),
    ({"levels": ["order", "family"], "parents": {**TOY["parents"], "crow": ["passerine", ["a", "b"]]}},
     "'crow'"),
    ({"levels": ["order", "family"], "parents": {**TOY["parents"], "jay": ["passerine", ""]}}, "'jay'"),
    ({"levels": ["order"], "fine_level": "order", "parents": {"a": ["b"]}}, "also a coarser level"),
    ({"levels": [], "parents": {}}, "non-empty mapping"),
])
def test_invalid_mappings_say_what_is_wrong(mapping, match):
    with pytest.raises(ValueError, match=match):
        parse_hierarchy(mapping)


def test_missing_and_unknown_classes_are_named():
    with pytest.raises(ValueError, match=r"without parents: \['sparrow'\]") as err:
        parse_hierarchy(TOY, classes=["crow", "gull", "jay", "robin", "sparrow"])
    assert "unknown" not in str(err.value)
    with pytest.raises(ValueError, match=r"unknown fine classes .*\['robin'\].*Did you mean 'robyn'"):
        parse_hierarchy(TOY, classes=["crow", "gull", "jay", "robyn"])


def test_unknown_name_and_bad_file(tmp_path):
    with pytest.raises(ValueError, match=r"not a built-in one \(\['imagewoof'"):
        load_hierarchy("imagewof")
    bad = tmp_path / "bad.json"
    bad.write_text("{levels: ")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_hierarchy(bad)
    with pytest.raises(TypeError, match="received int"):
        load_hierarchy(3)
    with pytest.raises(ValueError, match="Unknown level 'genus'"):
        parse_hierarchy(TOY).mapping_matrix("genus")
