"""Other frameworks' weight files, read and written without those frameworks.

PyTorch: read_torch_state_dict reads what torch.save(model.state_dict(), path) writes (the zip
format, torchvision's published weights included) without importing torch or unpickling;
load_torch_state_dict maps it onto a minicnn model by name; to_torch_state_dict and
write_torch_state_dict go the other way, to a file torch.load(path, weights_only=True) reads.
"""

from .torch_mapping import LoadReport, load_torch_state_dict, to_torch_state_dict
from .torch_reader import read_torch_state_dict
from .torch_writer import write_torch_state_dict

__all__ = [
    "LoadReport", "load_torch_state_dict", "read_torch_state_dict", "to_torch_state_dict", "write_torch_state_dict",
]
