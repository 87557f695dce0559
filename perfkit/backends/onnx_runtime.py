"""The onnxruntime backend: the forward pass exported to ONNX from the run's shared parameters, run by ONNX Runtime's
CPU execution provider. Optional: `pip install 'perfkit[onnx]'` (onnxruntime, and onnx for torch's exporter).

What a user deploying AlexNet for inference on a CPU would run, so the 2012 ratio can be set against it too. The
module is exported once when it is built (TorchScript-based `torch.onnx.export`, opset 17, the batch axis dynamic), so
export and session creation are never timed; one session then serves the check batch and the timed batch. The session
uses as many intra-op threads as torch has when the case is built (the runner sets the case's thread count first) and
runs its operators sequentially, as torch eager does.

Dropout: the forward pass runs the layers in training mode, so the graph keeps ONNX `Dropout` in training mode and ONNX
Runtime draws the masks. For the correctness check the module asks the session for each dropout's mask (its optional
second output, added to the graph's outputs) and hands it to the reference to replay, exactly as the torch modules'
captured masks are (perfkit.model). The timed call asks only for the output. ReLU and max-pool choices are not
captured: in a forward pass a near-tie changes an output by rounding only, never by a routed gradient.

float32 only: ONNX Runtime's CPU provider has no bfloat16 kernels for these operators, and its float16 path is not what
a CPU deployment runs.
"""
from __future__ import annotations

import importlib.util
import io
import warnings

import torch
from torch import nn

from perfkit.backends import Backend
from perfkit.model import AlexNetModule, TorchOps
from perfkit.specs import CrossEntropy, Dropout

#: The ONNX opset of the export: 17 has every operator AlexNet needs (LRN's pieces, SoftmaxCrossEntropyLoss).
OPSET = 17
#: The packages the backend needs, by import name.
REQUIRED_MODULES = ("onnxruntime", "onnx")


def missing_modules() -> list[str]:
    """The modules of REQUIRED_MODULES that cannot be imported here (none: the backend can run)."""
    missing = []
    for name in REQUIRED_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules (tests) or a broken install
            found = False
        if not found:
            missing.append(name)
    return missing


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "the forward pass exported to ONNX and run by ONNX Runtime's CPU execution provider (inference only)"
    passes = ("forward",)
    devices = ("cpu",)
    supports_autocast = False  # it runs the exported graph, not torch operators

    def unavailable_reason(self, device, dtype, pass_name):
        if pass_name not in self.passes:
            return "ONNX Runtime runs inference only: the onnxruntime backend has a forward pass and nothing else"
        reason = super().unavailable_reason(device, dtype, pass_name)
        if reason:
            return reason
        if dtype != "float32":
            return f"the onnxruntime backend runs float32 only (ONNX Runtime's CPU provider has no {dtype} path here)"
        missing = missing_modules()
        if missing:
            return f"{' and '.join(missing)} not installed (pip install 'perfkit[onnx]')"
        return None

    def build(self, layers, parameters, device, dtype):
        if device != "cpu" or dtype != torch.float32:
            raise ValueError(f"the onnxruntime backend runs float32 on the CPU, not {dtype} on {device}")
        return OnnxRuntimeModule(layers, parameters, threads=torch.get_num_threads())


class _Eager(nn.Module):
    """The torch forward of an AlexNetModule, for the exporter to trace (the ORT module's own forward runs ORT)."""

    def __init__(self, module: AlexNetModule):
        super().__init__()
        self.module = module

    def forward(self, x, target=None):
        return AlexNetModule.forward(self.module, x, target)


class OnnxRuntimeModule(AlexNetModule):
    """An AlexNetModule (same parameters, same names) whose forward runs an ONNX Runtime session.

    forward(x, target=None): x (N, *layers[0].in_shape) float32 on the CPU, target (N,) int64 when the layers end with
    the loss; returns the output as a CPU tensor (a 0-dim loss for the loss). The session holds the parameters as they
    were at build time: changing them later does not reach it (the backend has no pass that updates them)."""

    def __init__(self, layers, parameters, threads: int):
        super().__init__(layers, TorchOps, device="cpu", dtype=torch.float32, parameters=parameters)
        import onnx
        import onnxruntime as ort

        self.has_target = isinstance(self.specs[-1], CrossEntropy)
        self.dropout_names = [s.name for s in self.specs if isinstance(s, Dropout) and s.p > 0]
        model = onnx.load_from_string(self._export())
        # Each Dropout node's optional second output is its keep-mask; the exporter names it but leaves it unused.
        dropout_nodes = [n for n in model.graph.node if n.op_type == "Dropout"]
        if len(dropout_nodes) != len(self.dropout_names):
            raise RuntimeError(f"the ONNX export has {len(dropout_nodes)} Dropout nodes for the "
                               f"{len(self.dropout_names)} dropout layers of {', '.join(self.dropout_names) or 'none'}")
        self.mask_outputs = []
        for node in dropout_nodes:
            if len(node.output) < 2:
                node.output.append(f"{node.output[0]}_mask")
            elif not node.output[1]:
                node.output[1] = f"{node.output[0]}_mask"
            self.mask_outputs.append(node.output[1])
            model.graph.output.append(onnx.helper.make_tensor_value_info(node.output[1], onnx.TensorProto.BOOL, None))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.threads = threads
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def _export(self) -> bytes:
        """The layers' forward, traced in training mode (dropout active) at batch 2 with the batch axis dynamic."""
        x = torch.randn((2, *self.specs[0].in_shape))
        args = (x, torch.zeros(2, dtype=torch.long)) if self.has_target else (x,)
        names = ["x", "target"] if self.has_target else ["x"]
        axes = {name: {0: "batch"} for name in names}
        if not self.has_target:
            axes["output"] = {0: "batch"}
        buffer = io.BytesIO()
        self.train()
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter warns that it is deprecated (on import, too); the torch.export one needs
            # onnxscript as well.
            warnings.simplefilter("ignore")
            kwargs = dict(input_names=names, output_names=["output"], dynamic_axes=axes, opset_version=OPSET,
                          training=torch.onnx.TrainingMode.TRAINING if self.dropout_names
                          else torch.onnx.TrainingMode.EVAL, do_constant_folding=not self.dropout_names)
            try:
                torch.onnx.export(_Eager(self), args, buffer, dynamo=False, **kwargs)
            except TypeError:  # torch before 2.5 has no `dynamo` argument: its exporter is the TorchScript one
                torch.onnx.export(_Eager(self), args, buffer, **kwargs)
        return buffer.getvalue()

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        feeds = {"x": x.detach().contiguous().numpy()}
        if self.has_target:
            if target is None:
                raise ValueError(f"layer {self.specs[-1].name!r} is the loss and needs the class targets")
            feeds["target"] = target.detach().contiguous().numpy()
        capture = self.capture_for_reference and self.mask_outputs
        outputs = self.session.run(["output", *self.mask_outputs] if capture else ["output"], feeds)
        if capture:
            for name, mask in zip(self.dropout_names, outputs[1:]):
                self.captured_dropout_masks[name] = torch.from_numpy(mask)
        return torch.from_numpy(outputs[0])
