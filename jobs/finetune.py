"""Ray job entrypoint: `python jobs/finetune.py CONFIG [args]` runs `crossfed finetune CONFIG [args]`.

Used by `crossfed submit` and KubeRay RayJobs; it goes through the crossfed CLI so that a job and a
local run share one code path (and one-line errors, exit code 2 for user errors).
"""

import sys

from crossfed.cli import main

if __name__ == "__main__":
    sys.argv = ["crossfed", "finetune", *sys.argv[1:]]
    main()
