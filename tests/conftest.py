import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _seed_and_close_figures():
    torch.manual_seed(0)
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def randomize_(module: torch.nn.Module, std: float = 0.5) -> torch.nn.Module:
    """Every parameter drawn at random: references zero-initialize some (class token, positions,
    biases), and a zero weight would hide a conversion that puts it in the wrong place."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module
