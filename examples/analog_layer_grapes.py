"""An analog layer on crossbar tiles, trained in memory by pulsed updates, with GRAPES computed from the array.

    python examples/analog_layer_grapes.py

Shows the pieces under the compare job: a device preset, the periphery (DAC/ADC bits, output noise), an
AnalogLinear with the pulsed SGD step, GRAPES attached with the importance read from the tile through its ADC,
and the hardware counters.
"""
import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossbar import AnalogLinear, AnalogSGD, CrossbarConfig, IOParameters
from devices import get_preset
from imc_grapes import attach_grapes
from imc_grapes.data import BatchLoader, make_synthetic
from imc_grapes.suggest import SuggestingArgumentParser


def hardware_row_sums(layer: nn.Module) -> Tensor:
    """GRAPES's importance of an AnalogLinear: its row sums [out_features], read through the DAC/ADC."""
    assert isinstance(layer, AnalogLinear)
    return layer.row_sums(mode="hardware")


def main(argv: list[str] | None = None) -> None:
    """Run the example; ``argv``: its command-line arguments (none but ``--help``; default: ``sys.argv[1:]``)."""
    parser = SuggestingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)

    torch.manual_seed(0)
    periphery = IOParameters(inp_res=1 / 126, out_res=1 / 510, out_noise=0.06)  # 7-bit DAC, 9-bit ADC
    cfg = CrossbarConfig(device=get_preset("ReRamSB"), forward=periphery, backward=periphery, tile_rows=128,
                         tile_cols=128)
    hidden = AnalogLinear(64, 128, bias=False, rpu_config=cfg, seed=1)
    model = nn.Sequential(nn.Flatten(), hidden, nn.ReLU(), AnalogLinear(128, 10, bias=False, rpu_config=cfg, seed=2))
    # GRAPES importance = one all-ones read of the tile through DAC/ADC (what the chip can do)
    grapes = attach_grapes(model, mode="propagated", layers=[hidden], importance_fn=hardware_row_sums)
    opt = AnalogSGD(model.parameters(), lr=0.1)

    data = make_synthetic(n_train=2000, n_test=500, image_shape=(1, 8, 8))
    for epoch in range(3):
        for x, y in BatchLoader(data.train, 32, seed=epoch):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        with torch.no_grad():
            acc = (model(data.test.x).argmax(1) == data.test.y).float().mean()
        print(f"epoch {epoch + 1}: test accuracy {100 * acc:.1f}%, mean GRAPES factor "
              f"{grapes.modulations[grapes.names[0]].mean():.3f}")
    print("hardware counters of the hidden layer:",
          {k: int(v) for k, v in hidden.tile.counters.items()})


if __name__ == "__main__":
    main()
