"""models.common.loss_curve: the one plot both trainers write."""

from models.common.loss_curve import Curve, draw_loss_curves, smoothed


def test_log_and_linear_plots_draw_every_curve_in_its_colour():
    red, blue = (210, 40, 40), (30, 90, 200)
    curves = [Curve("a", range(50), [10.0 * 0.9**i for i in range(50)], red), Curve("b", [10, 40], [0.5, 0.2], blue)]
    for log_scale in (True, False):
        image = draw_loss_curves(curves, log_scale=log_scale, title="t")
        colours = set(image.getdata())
        assert image.size == (640, 360) and red in colours and blue in colours, log_scale


def test_non_positive_and_non_finite_values_are_left_out_of_a_log_plot():
    image = draw_loss_curves([Curve("off", range(3), [0.0, 0.0, 0.0], (40, 150, 60))], log_scale=True)
    assert (40, 150, 60) not in set(image.getdata())  # nothing to draw: "no steps yet"
    image = draw_loss_curves([Curve("nan", range(3), [1.0, float("nan"), 2.0], (40, 150, 60))], log_scale=False)
    assert (40, 150, 60) in set(image.getdata())


def test_smoothing_keeps_about_fifty_points_centred():
    steps, values = smoothed(list(range(500)))
    assert len(values) == 491 and steps[0] == 4.5 and abs(values[0] - 4.5) < 1e-9
