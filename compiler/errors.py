"""The one error hierarchy of solder: every user-facing failure is a `SolderError` whose message says
where, what was expected, what was found, and what to do."""


class SolderError(Exception):
    """Base of all solder errors."""


class CaptureError(SolderError):
    """`torch.export` could not capture the model."""


class ImportError_(SolderError):
    """The FX graph could not be turned into the `graph` dialect."""


class PipelineError(SolderError):
    """A malformed pipeline string, an unknown pass or a bad pass option."""


class TargetError(SolderError):
    """An unknown target, or a target whose backend cannot run here."""


class IRParseError(SolderError):
    """Malformed `.mlir` text; the message carries the line and column."""


class CallError(SolderError):
    """A compiled callable was called with arguments that do not match its signature."""


class VerifyError(SolderError):
    """IR that breaks an invariant (use before def, bad types), or a compiled result that differs from eager."""


class ArtifactError(SolderError):
    """A saved artifact that cannot be written or read: wrong version or target, damaged, incomplete, or holding
    something that is not data (an extern call outside the allowlist, an expression that is not arithmetic)."""


class ExternError(SolderError):
    """A `graph.extern` callee or argument spec outside what solder runs: not an allowlisted operator overload."""



class OptionError(SolderError):
    """A `compile()` option with a value it cannot take (`dynamic="yes"`, a cost model that does not load)."""


class PrecisionFallbackWarning(UserWarning):
    """The backend generates no code for the model's dtype (bf16/fp16 on the CPU): those ops run op by op on the
    reference backend (eager PyTorch), slower than generated kernels."""
