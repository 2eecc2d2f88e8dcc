//! CloudFormation generator (filled in by the infra issue).
