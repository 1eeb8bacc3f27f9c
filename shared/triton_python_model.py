"""Triton Python-backend model that runs a TorchScript tower: copied into each version
directory of the local model repository as `model.py`. The official Triton image serves
the same `model.pt` with its PyTorch backend instead (see triton_repository.py).

It runs inside Triton's Python stub, which starts the interpreter without the suite's
virtual environment on sys.path, so the site directories named in the environment are
added first.
"""

import json
import os
import site
from typing import Any

for _directory in os.environ.get("RECSYS_TRITON_SITE_PACKAGES", "").split(os.pathsep):
    if _directory:
        site.addsitedir(_directory)

import torch  # noqa: E402
import torch.utils.dlpack  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.output = config["output"][0]["name"]
        threads = int(os.environ.get("RECSYS_TRITON_TORCH_THREADS", "1"))
        torch.set_num_threads(max(1, threads))
        path = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        self.module = torch.jit.load(path, map_location="cpu")  # type: ignore[no-untyped-call]
        self.module.eval()

    def execute(self, requests: list[Any]) -> list[Any]:
        # Dynamic batching hands over several requests at once: one forward pass for all.
        # Tensors cross the stub through DLPack both ways: with the bundled stub and NumPy
        # 1.x, as_numpy() and pb_utils.Tensor(numpy) garble or drop the data.
        columns = [
            [
                torch.utils.dlpack.from_dlpack(
                    pb_utils.get_input_tensor_by_name(r, name).to_dlpack()
                )
                for r in requests
            ]
            for name in self.inputs
        ]
        sizes = [len(part) for part in columns[0]]
        tensors = [torch.cat(parts) if len(parts) > 1 else parts[0] for parts in columns]
        with torch.inference_mode():
            output = self.module(*tensors).to(torch.float32)
        return [
            pb_utils.InferenceResponse(
                [
                    pb_utils.Tensor.from_dlpack(
                        self.output,
                        torch.utils.dlpack.to_dlpack(part.contiguous()),  # type: ignore[attr-defined]
                    )
                ]
            )
            for part in torch.split(output, sizes)
        ]
