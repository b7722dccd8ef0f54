"""Ray job entrypoint: `python jobs/study.py CONFIG [args]` runs `crossfed study CONFIG [args]`.

Used by `crossfed submit --command study` and KubeRay RayJobs (the study then runs on the cluster the job
runs in: its pre-training clients on their experiments' node groups, fine-tuning as Ray tasks beside them).
"""

import sys

from crossfed.cli import main

if __name__ == "__main__":
    sys.argv = ["crossfed", "study", *sys.argv[1:]]
    main()
