"""How often a run commits a round to its storage (`output_dir` / CROSSFED_STORAGE), and how many it keeps."""

from pydantic import Field, PositiveInt

from crossfed.config.base import Section


class CheckpointConfig(Section):
    keep: PositiveInt = Field(
        2, description="committed rounds kept; a damaged newest round is skipped on --resume for an older one"
    )
    every: PositiveInt = Field(
        1, description="commit (checkpoint every client, then the driver) every N rounds and after the last: fewer "
                       "writes per round; an interrupted run resumes from its last commit and runs the rounds "
                       "after it again, and their metrics reach MLflow with the commit (1 with privacy)"
    )
    background: bool = Field(
        False, description="write each commit while the next round trains: the clients snapshot their state at "
                           "once, their uploads, manifests and the commit marker follow in the background (the "
                           "round counts once its marker is written; its metrics reach MLflow then). For remote "
                           "run storage or nodes with idle CPU cores; where training takes every core it slows "
                           "training more than it saves. Not with privacy"
    )
