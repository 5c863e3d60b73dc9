import keras
import numpy as np
import pytest

from keras_attention.layers import NAM, NAMSparsity, create_attention
from tests.helpers import count_trainable_params, random_images, run_layer_test

SHAPES = [(2, 8, 8, 16), (1, 5, 7, 16), (2, 1, 1, 16)]
EPS = 1e-5


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("kwargs", [{}, {"spatial": True, "sparsity": 1e-3}])
def test_contract(tmp_path, kwargs):
    keras.utils.set_random_seed(0)
    # (2, 1, 1, 16) with spatial=True: one pixel, so the pixel weight |l| / sum |l| = 1.
    run_layer_test(NAM, kwargs, SHAPES, tmp_path=tmp_path, fresh_process=not kwargs)


def test_save_and_load_with_spatial_branch_and_regularizer(tmp_path):
    inputs = keras.Input((3, 4, 8))
    model = keras.Model(inputs, NAM(spatial=True, sparsity=1e-3)(inputs))
    x = random_images((2, 3, 4, 8), seed=9)
    model.save(tmp_path / "nam.keras")
    restored = keras.saving.load_model(tmp_path / "nam.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-6, atol=1e-6)
    reg = restored.layers[-1].pixel_norm.gamma_regularizer
    assert isinstance(reg, NAMSparsity) and reg.l1 == 1e-3


def _set_bn(norm, rng, size):
    norm.set_weights([rng.normal(0, 1.0, size), rng.normal(0, 0.3, size),
                      rng.normal(0, 0.3, size), rng.uniform(0.5, 2.0, size)])


def _bn_inference(x, norm, axis):
    gamma, beta, mean, var = [keras.ops.convert_to_numpy(w) for w in norm.get_weights()]
    shape = [1] * x.ndim
    shape[axis] = -1
    r = lambda v: v.reshape(shape)  # noqa: E731
    return r(gamma) * (x - r(mean)) / np.sqrt(r(var) + EPS) + r(beta), np.abs(gamma) / np.abs(gamma).sum()


def test_channel_branch_matches_numpy_reference():
    layer = NAM()
    x = random_images((2, 4, 5, 8), seed=1)
    layer.build(x.shape)
    _set_bn(layer.channel_norm, np.random.default_rng(1), 8)  # gammas of both signs
    bn, w = _bn_inference(x, layer.channel_norm, -1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), sigmoid(w * bn) * x,
                               rtol=1e-5, atol=1e-6)


def test_channel_branch_in_training_uses_batch_statistics():
    layer = NAM()
    x = random_images((3, 4, 5, 8), seed=2)
    layer.build(x.shape)
    gamma = np.random.default_rng(2).normal(0, 1, 8).astype("float32")
    layer.channel_norm.gamma.assign(gamma)
    xhat = (x - x.mean(axis=(0, 1, 2))) / np.sqrt(x.var(axis=(0, 1, 2)) + EPS)
    w = np.abs(gamma) / np.abs(gamma).sum()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=True)), sigmoid(w * gamma * xhat) * x,
                               rtol=1e-4, atol=1e-5)


def test_spatial_branch_matches_numpy_reference():
    layer = NAM(spatial=True)
    x = random_images((2, 3, 4, 8), seed=3)
    layer.build(x.shape)
    rng = np.random.default_rng(3)
    _set_bn(layer.channel_norm, rng, 8)
    _set_bn(layer.pixel_norm, rng, 12)
    bn, w = _bn_inference(x, layer.channel_norm, -1)
    channel_out = sigmoid(w * bn) * x
    pixels = channel_out.reshape(2, 12, 8)  # each of the H*W positions is a BN feature
    bn_s, w_s = _bn_inference(pixels, layer.pixel_norm, 1)
    expected = (sigmoid(w_s[None, :, None] * bn_s) * pixels).reshape(x.shape)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), expected, rtol=1e-5, atol=1e-6)


def test_pixel_norm_statistics_are_over_batch_and_channels():
    layer = NAM(spatial=True, sparsity=None)
    x = random_images((2, 2, 3, 4), seed=4)
    layer.build(x.shape)
    layer(x, training=True)
    # Moving mean moves towards the per-pixel mean over (batch, channels): momentum 0.9.
    gamma = np.ones(4)
    xhat = (x - x.mean(axis=(0, 1, 2))) / np.sqrt(x.var(axis=(0, 1, 2)) + EPS)
    c_out = sigmoid(gamma / 4 * xhat) * x
    per_pixel = c_out.reshape(2, 6, 4).mean(axis=(0, 2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.pixel_norm.moving_mean), 0.1 * per_pixel,
                               rtol=1e-4, atol=1e-6)


def _gradient(loss_fn, layer, variable):
    """d loss / d variable with the current backend's autodiff (TensorFlow or JAX)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        return keras.ops.convert_to_numpy(tape.gradient(loss, variable.value))
    if backend == "jax":
        import jax

        index = [v.path for v in layer.trainable_variables].index(variable.path)
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def f(values):
            return loss_fn(lambda x, **kw: layer.stateless_call(values, non_trainable, x, **kw)[0])

        return keras.ops.convert_to_numpy(jax.grad(f)([v.value for v in layer.trainable_variables])[index])
    pytest.skip(f"no gradient helper for backend {backend}")


def test_no_gradient_through_the_importance_weights():
    layer = NAM(sparsity=None)
    x = random_images((2, 3, 3, 4), seed=5)
    layer.build(x.shape)
    norm = layer.channel_norm
    _set_bn(norm, np.random.default_rng(5), 4)
    upstream = random_images(x.shape, seed=6)

    def loss_fn(call=None):
        y = (call or layer)(x, training=False)
        return keras.ops.sum(y * upstream)

    grad = _gradient(loss_fn, layer, norm.gamma)
    # Analytic gradient treating w as a constant: out = sigmoid(w (g xhat + b)) x.
    gamma, beta, mean, var = [np.asarray(v, "float64") for v in norm.get_weights()]
    xhat = (x - mean) / np.sqrt(var + EPS)
    w = np.abs(gamma) / np.abs(gamma).sum()
    s = sigmoid(w * (gamma * xhat + beta))
    expected = (upstream * x * s * (1 - s) * w * xhat).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_sparsity_regularizer():
    layer = NAM(spatial=True, sparsity=2e-3)
    x = random_images((2, 3, 3, 4), seed=7)
    layer(x)
    layer.channel_norm.gamma.assign(np.array([1.0, -2.0, 0.5, 0.0], "float32"))
    layer.pixel_norm.gamma.assign(np.linspace(-1, 1, 9).astype("float32"))
    losses = sorted(float(keras.ops.convert_to_numpy(v)) for v in layer.losses)
    np.testing.assert_allclose(losses, sorted([2e-3 * 3.5, 2e-3 * np.abs(np.linspace(-1, 1, 9)).sum()]),
                               rtol=1e-6)
    assert isinstance(layer.channel_norm.gamma_regularizer, NAMSparsity)
    default = NAM()
    default.build(x.shape)
    assert default.channel_norm.gamma_regularizer.l1 == 1e-4  # the official default
    for off in (None, 0):
        layer = NAM(sparsity=off)
        layer(x)
        assert layer.losses == [] and layer.channel_norm.gamma_regularizer is None


def test_sparsity_regularizer_is_added_to_the_training_loss():
    inputs = keras.Input((3, 3, 4))
    model = keras.Model(inputs, NAM(sparsity=0.5)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = random_images((2, 3, 3, 4), seed=8)
    target = keras.ops.convert_to_numpy(model(x, training=True))
    loss = model.train_on_batch(x, target)
    np.testing.assert_allclose(loss, 0.5 * 4, rtol=1e-5)  # gamma = 1: 0.5 * sum |1|


def test_regularizer_serialization():
    reg = NAMSparsity(3e-4)
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert isinstance(restored, NAMSparsity) and restored.get_config() == {"l1": 3e-4}
    np.testing.assert_allclose(float(reg(np.array([1.0, -3.0], "float32"))), 3e-4 * 4)
    with pytest.raises(ValueError, match="l1"):
        NAMSparsity(-1.0)


def test_parameter_counts():
    c, h, w = 64, 7, 7
    inputs = keras.Input((h, w, c))
    channel = NAM()
    model = keras.Model(inputs, channel(inputs))
    # Channel branch: BN gamma and beta (2C trainable; moving mean/var 2C non-trainable).
    assert count_trainable_params(model) == 2 * c == 128
    assert channel.count_params() == 4 * c
    spatial = NAM(spatial=True)
    # Pixel branch: BN over the H*W positions, gamma and beta (2HW).
    assert count_trainable_params(keras.Model(inputs, spatial(inputs))) == 2 * c + 2 * h * w == 226


def test_factory_name():
    assert isinstance(create_attention("nam", spatial=False), NAM)


@pytest.mark.parametrize("kwargs, error", [
    ({"sparsity": -1e-4}, ValueError),
    ({"sparsity": "1e-4"}, TypeError),
    ({"spatial": "yes"}, TypeError),
    ({"reduction_ratio": 16}, TypeError),
    ({"reduction_channels": 8}, TypeError),
])
def test_invalid_arguments(kwargs, error):
    with pytest.raises(error):
        NAM(**kwargs)


def test_wrong_rank():
    with pytest.raises(ValueError, match="4D input"):
        NAM()(np.zeros((2, 16), "float32"))


def test_spatial_needs_known_size():
    with pytest.raises(ValueError, match="height and width"):
        NAM(spatial=True)(keras.Input((None, None, 8)))
    layer = NAM(spatial=True)
    layer(random_images((1, 4, 4, 8)))
    with pytest.raises(ValueError):
        layer(random_images((1, 5, 4, 8)))
