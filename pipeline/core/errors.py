"""Errors a stage reports as one clear line instead of a traceback."""


class PipelineError(Exception):
    """A problem the user can fix: bad params or bad input data."""


class ParamsError(PipelineError):
    """params.yaml or a stage's declared params are invalid; the message names the key."""


class DataError(PipelineError):
    """Input data is missing, corrupt or fails verification; the message names the file."""


class SourceUnavailable(PipelineError):
    """A data source cannot be reached or is not configured; auto mode tries the next one."""
