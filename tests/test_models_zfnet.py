"""ZFNet (Zeiler & Fergus, 2013): the 7x7 stride-2 first layer, 512/1024/512 filters in layers
3-5, figure 3's map sizes (110, 55, 26, 13, 13, 6 at 224x224) and its parameter count."""

import jax
import jax.numpy as jnp

import jaxcnn
from jaxcnn.models import abstract_variables


def test_zfnet_layers_and_map_sizes_follow_the_paper():
    model = jaxcnn.create_model("zfnet")
    variables = abstract_variables(model, (224, 224, 3))
    params = variables["params"]
    assert params["conv1"]["kernel"].shape == (7, 7, 3, 96)
    assert params["conv2"]["kernel"].shape == (5, 5, 96, 256)
    assert [params[f"conv{i}"]["kernel"].shape[-1] for i in (3, 4, 5)] == [512, 1024, 512]
    assert params["fc6"]["kernel"].shape == (6 * 6 * 512, 4096)
    conv_fc = [7 * 7 * 3 * 96 + 96, 25 * 96 * 256 + 256, 9 * 256 * 512 + 512,
               9 * 512 * 1024 + 1024, 9 * 1024 * 512 + 512, 18432 * 4096 + 4096,
               4096 * 4096 + 4096, 4096 * 1000 + 1000]
    assert jaxcnn.count_params(variables) == sum(conv_fc) == 107_627_624
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.features), variables, x)
    sides = [feats[f"stage{i}"].shape[1] for i in range(1, 6)]
    assert sides == [55, 13, 13, 13, 6]  # after pool1, pool2, conv3, conv4, pool5
    assert feats["logits"].shape == (1, 1000)
