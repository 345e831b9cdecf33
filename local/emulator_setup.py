"""Prepares a fresh moto server for the platform and prints the shell exports that point the
SDK at it.

Everything moto-specific lives here, never in the platform's code:
- ECS tasks on moto advance one state per DescribeTasks call and would reach STOPPED; a
  manual transition keeps RunTask-launched tasks RUNNING, as Fargate keeps a healthy task.
- RunTask with awsvpc needs a real subnet and security group: take the default VPC's.
- S3 on moto answers path-style addresses only (no virtual-hosted bucket names on
  127.0.0.1), and the backups need their bucket: one for the whole emulator, shared by every
  stack on it (backup keys lead with the tenant's id, so stacks never meet there).
"""

import json
import sys
import time
import urllib.error
import urllib.request

import boto3


def wait_until_up(base: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{base}/moto-api/", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                sys.exit(f"the emulator at {base} did not answer within {seconds:.0f} s")
            time.sleep(0.1)


def keep_ecs_tasks_running(base: str) -> None:
    body = json.dumps(
        {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000}}
    ).encode()
    request = urllib.request.Request(
        f"{base}/moto-api/state-manager/set-transition", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def default_network(base: str) -> tuple[str, str]:
    ec2 = boto3.client(
        "ec2",
        endpoint_url=base,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        sys.exit("the emulator has no default VPC")
    vpc = vpcs[0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"]
    if not subnets or not groups:
        sys.exit("the emulator's default VPC has no subnet or security group")
    return subnets[0]["SubnetId"], groups[0]["GroupId"]


BACKUP_BUCKET = "dotmac-local-backups"


def backup_bucket(base: str) -> str:
    s3 = boto3.client(
        "s3",
        endpoint_url=base,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    try:
        s3.create_bucket(Bucket=BACKUP_BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return BACKUP_BUCKET


def main() -> None:
    port = int(sys.argv[1])
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base)
    keep_ecs_tasks_running(base)
    subnet, group = default_network(base)
    bucket = backup_bucket(base)
    print(f"export AWS_ENDPOINT_URL={base}")
    print("export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}")
    print("export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}")
    print("export AWS_REGION=${AWS_REGION:-us-east-1}")
    print(f"export DOTMAC_ECS_SUBNETS={subnet}")
    print(f"export DOTMAC_ECS_SECURITY_GROUPS={group}")
    print(f"export DOTMAC_BACKUP_BUCKET=${{DOTMAC_BACKUP_BUCKET:-{bucket}}}")
    print("export DOTMAC_S3_FORCE_PATH_STYLE=${DOTMAC_S3_FORCE_PATH_STYLE:-true}")


if __name__ == "__main__":
    main()
