"""Print the hyperparameters the SageMaker Python SDK 1.x Chainer estimator sends (run with an
interpreter that has ``sagemaker<2`` installed; no AWS account: S3 upload is stubbed).

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python /tmp/sdkvenv/bin/python sdk_reference.py CASES
"""

import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import sagemaker  # type: ignore[import-not-found]
from sagemaker.chainer import Chainer  # type: ignore[import-not-found]

SUBMIT = "s3://code-bucket/job-1/source/sourcedir.tar.gz"


def sent(props: dict) -> dict:  # type: ignore[type-arg]
    session = mock.MagicMock()
    session.boto_region_name = "us-west-2"
    session.local_mode = False
    session.config = None
    with tempfile.TemporaryDirectory() as source:
        (Path(source) / "train.py").write_text("")
        estimator = Chainer(
            entry_point="train.py",
            source_dir=source,
            role="arn:aws:iam::123456789012:role/r",
            train_instance_count=1,
            train_instance_type="ml.m5.xlarge",
            framework_version="5.0.0",
            py_version="py3",
            sagemaker_session=session,
            code_location="s3://code-bucket",
            **props,
        )
        with mock.patch("sagemaker.fw_utils.tar_and_upload_dir") as upload:
            upload.return_value = sagemaker.fw_utils.UploadedCode(
                s3_prefix=SUBMIT, script_name="train.py"
            )
            estimator._prepare_for_training(job_name="job-1")
    return estimator.hyperparameters()  # type: ignore[no-any-return]


if __name__ == "__main__":
    cases = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps([sent(case) for case in cases]))
