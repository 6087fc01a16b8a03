"""What TensorRT 8.5's ONNX parser would reject or change in a model, naming the nodes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import onnx
from onnx import TensorProto

TRT85_MAX_OPSET = 17
# Operators in TensorRT 8.5's ONNX support matrix (onnx-tensorrt docs/operators.md, 8.5 branch).
_TRT85_OP_LIST = """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
    Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
    GreaterOrEqual GridSample GRU HardSigmoid HardSwish Identity If InstanceNormalization
    IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization
    LpPool LRN LSTM MatMul Max MaxPool Mean Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot
    Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
    RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
    Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan ScatterElements ScatterND
    Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth
    Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze
    Upsample Where Xor"""
TRT85_OPS = frozenset(_TRT85_OP_LIST.split())


@dataclass(frozen=True)
class LintIssue:
    """One finding: ``severity`` is "error" (the parser rejects it) or "warning" (it changes it)."""

    severity: str
    node: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """Plain mapping for JSON."""
        return asdict(self)


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def lint_for_tensorrt85(model: onnx.ModelProto) -> list[LintIssue]:
    """Findings for TensorRT 8.5: unsupported ops, INT64 weights, non-batch dynamic dims."""
    issues: list[LintIssue] = []
    if _opset(model) > TRT85_MAX_OPSET:
        issues.append(LintIssue("error", "<model>", f"opset {_opset(model)} > {TRT85_MAX_OPSET}"))
    for i, node in enumerate(model.graph.node):
        name = node.name or f"#{i} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            issues.append(LintIssue("error", name, f"custom domain {node.domain!r} op"))
        elif node.op_type not in TRT85_OPS:
            issues.append(LintIssue("error", name, f"{node.op_type} is not supported"))
    for init in model.graph.initializer:
        if init.data_type == TensorProto.INT64:
            issues.append(LintIssue("warning", init.name, "INT64 weights are cast down to INT32"))
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if axis > 0 and (dim.dim_param or dim.dim_value <= 0):
                issues.append(
                    LintIssue(
                        "warning",
                        value.name,
                        f"dimension {axis} is dynamic ({dim.dim_param or '?'}); "
                        "only the batch axis should be",
                    )
                )
    return issues
