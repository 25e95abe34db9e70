import numpy as np
import pytest

from models.common.errors import UsageError
from models.style.policy import parse_alpha, parse_styles, plan_outputs, record_seed

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


def paintings(count=5, dim=8, seed=0):
    from models.style.policy import PaintingSet

    rng = np.random.default_rng(seed)
    return PaintingSet.fit([(f"p{i}.png", rng.normal(size=dim).astype(np.float32)) for i in reversed(range(count))])


def test_painting_set_is_sorted_and_full_rank_even_when_small():
    small = paintings(count=3, dim=8)
    assert small.ids == ("p0.png", "p1.png", "p2.png")
    covariance = small.cholesky @ small.cholesky.T
    assert np.linalg.matrix_rank(covariance) == 8 and np.linalg.eigvalsh(covariance).min() > 1e-4
    with pytest.raises(UsageError, match="no usable painting"):
        paintings(count=0)


def test_painting_plans_carry_their_provenance():
    from models.style.policy import plan_painting_outputs

    collection = paintings()
    every = plan_painting_outputs(parse_styles("all"), (1, 1), collection, seed=3)
    assert [p.style for p in every] == list(collection.ids) and all(p.on_paintings for p in every)
    assert every[2].style_ids == ("p2.png",) and np.array_equal(every[2].code, collection.embeddings[2])
    assert every[0].style_weights is None

    picked = plan_painting_outputs(parse_styles("random:2"), (1, 1), collection, seed=3)
    assert len({p.style for p in picked}) == 2 and all(p.style in collection.ids for p in picked)

    for plan in plan_painting_outputs(parse_styles("mix:4"), (1, 1), collection, seed=3):
        assert plan.style == "mix" and len(plan.style_ids) == 3 and len(set(plan.style_ids)) == 3
        assert abs(sum(plan.style_mix) - 1) < 1e-6 and min(plan.style_mix) >= 0
        rows = [collection.embeddings[collection.ids.index(i)] for i in plan.style_ids]
        np.testing.assert_allclose(plan.code, np.tensordot(plan.style_mix, rows, 1), atol=1e-5)


def test_randomize_samples_differ_follow_the_collection_and_repeat_per_seed():
    from models.style.policy import plan_painting_outputs

    collection = paintings(count=50, dim=4)
    plans = plan_painting_outputs(parse_styles("randomize:400"), (1, 1), collection, seed=7)
    codes = np.stack([p.code for p in plans])
    assert all(p.style == "random" and not p.style_ids for p in plans)
    assert len({c.tobytes() for c in codes}) == 400
    assert np.abs(codes.mean(0) - collection.mean).max() < 0.25  # centred on the paintings' mean
    again = plan_painting_outputs(parse_styles("randomize:400"), (1, 1), collection, seed=7)
    assert all(np.array_equal(a.code, b.code) for a, b in zip(plans, again, strict=True))
    with pytest.raises(UsageError, match="needs --style-images"):
        parse_styles("randomize:2").check(len(NAMES))


def test_blend_code_interpolates_toward_the_content_embedding():
    from models.style.policy import blend_code

    style, content = np.ones(3, np.float32), np.zeros(3, np.float32)
    assert np.array_equal(blend_code(style, None, 1.0), style)
    np.testing.assert_allclose(blend_code(style, content, 0.25), [0.25] * 3)


def test_every_k_is_bounded_in_one_line():
    """--styles mix:100000000 asked numpy for 19.4 GiB and crashed in 547 lines."""
    from models.style.policy import MAX_OUTPUTS_PER_IMAGE, StylePolicy

    for mode in ("random", "mix", "randomize"):
        assert parse_styles(f"{mode}:{MAX_OUTPUTS_PER_IMAGE}").count == MAX_OUTPUTS_PER_IMAGE
        with pytest.raises(UsageError, match=f"from 1 to {MAX_OUTPUTS_PER_IMAGE}"):
            parse_styles(f"{mode}:100000000")
        with pytest.raises(UsageError, match="from 1 to"):
            StylePolicy(mode, 10**8)  # the policy itself, as the online transform builds it
    with pytest.raises(UsageError, match="--styles"):
        parse_styles("mix:²")  # a digit to str.isdigit, not to int()


def test_style_conditioning_turns_plans_into_codes_and_pixel_alphas():
    """The one place plans become network inputs: checkpoint styles blend pixels by alpha; paintings blend their
    embedding toward the content's own (computed once per content image) and leave the pixels unblended."""
    from models.style.policy import StylePlan, blend_code, style_conditioning

    paint = np.full(2, 4.0, np.float32)
    plans = [
        StylePlan(0, "red", np.array([0, 1], np.float32), 0.3),
        StylePlan(0, "p", paint, 0.5, ("p",), (1.0,), on_paintings=True),
        StylePlan(1, "p", paint, 0.25, ("p",), (1.0,), on_paintings=True),
        StylePlan(0, "p", paint, 1.0, ("p",), (1.0,), on_paintings=True),
        StylePlan(0, "p", paint, 0.5, ("p",), (1.0,), on_paintings=True),
    ]
    contents = [np.full((2, 2, 3), value, np.uint8) for value in (0, 10, 10, 20, 30)]
    embedded = []

    def embed(images):
        embedded.append(len(images))
        return np.stack([np.full(2, image.mean(), np.float32) for image in images])

    result = style_conditioning(plans, contents.__getitem__, embed, keys=["a", "b", "b", "c", "d"])
    assert embedded == [2] and result.content_embeddings == 2  # b (shared by two plans) and d; c has alpha 1
    assert np.array_equal(result.alphas, np.array([0.3, 1, 1, 1, 1], np.float32))
    assert np.array_equal(result.codes[0], plans[0].code) and np.array_equal(result.codes[3], paint)
    assert np.array_equal(result.codes[1], blend_code(paint, np.full(2, 10.0), 0.5))
    assert np.array_equal(result.codes[2], blend_code(paint, np.full(2, 10.0), 0.25))
    assert np.array_equal(result.codes[4], blend_code(paint, np.full(2, 30.0), 0.5))
    assert result.codes.dtype == np.float32 and result.alphas.dtype == np.float32
    with pytest.raises(UsageError, match="style predictor"):
        style_conditioning(plans, contents.__getitem__)
