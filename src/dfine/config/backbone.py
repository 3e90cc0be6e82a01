"""``HGNetV2Config``: the HGNetv2 backbone's part of ``config.json``, with the field names and defaults of
transformers' ``HGNetV2Config`` (model_type ``hgnet_v2``).
"""

from __future__ import annotations

from typing import Any

from dfine.config.fields import JsonConfig


class HGNetV2Config(JsonConfig):
    """HGNetv2 backbone configuration (transformers' ``models/hgnet_v2/configuration_hgnet_v2.py``).

    Defaults are the B4 backbone of D-FINE-L.
    """

    model_type = "hgnet_v2"
    _defaults = {
        "num_channels": 3,
        "embedding_size": 64,
        "depths": [3, 4, 6, 3],
        "hidden_sizes": [256, 512, 1024, 2048],
        "hidden_act": "relu",
        "out_features": ["stage2", "stage3", "stage4"],
        "out_indices": [2, 3, 4],
        "stem_channels": [3, 32, 48],
        "stem_strides": [2, 1, 1, 2, 1],
        "stage_in_channels": [48, 128, 512, 1024],
        "stage_mid_channels": [48, 96, 192, 384],
        "stage_out_channels": [128, 512, 1024, 2048],
        "stage_num_blocks": [1, 1, 3, 1],
        "stage_downsample": [False, True, True, True],
        "stage_downsample_strides": [2, 2, 2, 2],
        "stage_light_block": [False, False, True, True],
        "stage_kernel_size": [3, 3, 5, 5],
        "stage_numb_of_layers": [6, 6, 6, 6],
        "use_learnable_affine_block": False,
        "initializer_range": 0.02,
    }
    _nullable = frozenset({"hidden_act"})  # None: no activation

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if "out_indices" not in kwargs and "out_features" in kwargs:
            self.out_indices = [int(name.replace("stage", "")) for name in self.out_features]
        self.out_features = [f"stage{i}" if i else "stem" for i in self.out_indices]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HGNetV2Config:
        """From a ``backbone_config`` dict of a file: keys we do not know are kept, not refused."""
        return cls._from_file_dict(data)

    @property
    def out_channels(self) -> list[int]:
        """Channels of the returned feature maps (stem = 0, stage s = s)."""
        channels = [self.stem_channels[2]] + list(self.stage_out_channels)
        return [channels[i] for i in self.out_indices]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.setdefault("stage_names", ["stem"] + [f"stage{i + 1}" for i in range(len(self.stage_in_channels))])
        return out
