import numpy as np
import pytest

from models.errors import UsageError
from transforms.style_policy import parse_alpha, parse_styles, plan_outputs, record_seed

NAMES = ["blue", "red", "stars", "lines"]


def test_parse_styles_and_alpha():
    assert parse_styles("all").mode == "all"
    assert parse_styles("random:2").count == 2 and parse_styles("mix:3").mode == "mix"
    assert parse_alpha("0.7") == (0.7, 0.7) and parse_alpha("0.2,0.9") == (0.2, 0.9)
    for bad in ["some", "random:0", "random:x", "mix"]:
        with pytest.raises(UsageError, match="--styles"):
            parse_styles(bad)
    for bad in ["1.5", "0.9,0.1", "a", "0,0.5,1"]:
        with pytest.raises(UsageError, match="--alpha"):
            parse_alpha(bad)
    with pytest.raises(UsageError, match="more distinct styles"):
        parse_styles("random:5").check(len(NAMES))


def test_record_seed_depends_on_job_seed_and_id_only():
    assert record_seed(0, "a.jpg") == record_seed(0, "a.jpg")
    assert len({record_seed(0, "a.jpg"), record_seed(1, "a.jpg"), record_seed(0, "b.jpg")}) == 3
    assert 0 <= record_seed(123, "x") < 2**63


def test_all_gives_every_style_one_hot():
    plans = plan_outputs(parse_styles("all"), (1.0, 1.0), NAMES, seed=5)
    assert [p.style for p in plans] == NAMES and [p.index for p in plans] == [0, 1, 2, 3]
    assert np.array_equal(np.stack([p.style_weights for p in plans]), np.eye(4, dtype=np.float32))


def test_random_draws_distinct_styles_reproducibly():
    draws = [tuple(p.style for p in plan_outputs(parse_styles("random:2"), (1, 1), NAMES, s)) for s in range(40)]
    assert all(len(set(d)) == 2 for d in draws)
    assert len(set(draws)) > 3  # the seed matters
    assert draws == [
        tuple(p.style for p in plan_outputs(parse_styles("random:2"), (1, 1), NAMES, s)) for s in range(40)
    ]


def test_mix_weights_are_convex_and_alpha_in_range():
    plans = plan_outputs(parse_styles("mix:3"), (0.25, 0.75), NAMES, seed=9)
    for plan in plans:
        assert plan.style == "mix" and plan.style_weights.dtype == np.float32
        assert abs(float(plan.style_weights.sum()) - 1) < 1e-6 and (plan.style_weights >= 0).all()
        assert 0.25 <= plan.alpha <= 0.75
    assert len({p.alpha for p in plans}) == 3
