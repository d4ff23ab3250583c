"""`codeactions import-mongo`: the Go service's MongoDB-era collections into PostgreSQL.

No MongoDB server can be had on these machines: the collections live in mongomock, an
in-process stand-in that speaks pymongo's API (the importer only calls that API). The
PostgreSQL side, the CLI and the API are the real ones.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import mongomock
import pytest
import requests
from bson import ObjectId
from pymongo.errors import AutoReconnect
from sqlalchemy import create_engine, text

from shared.adoption.legacy_values import project_uuid_for
from shared.adoption.mongo_import import MongoImportAborted, MongoImporter
from tests.conftest import Platform
from tests.integration import legacy_go_service as legacy

NOW = datetime.now(UTC).replace(microsecond=0)
PROJECT = str(uuid.uuid4())


def mongo_era_documents() -> dict[str, list[dict]]:
    """Documents as the old service wrote them in its MongoDB days (bson field names from
    its Go structs: projects without tags, so `useremail`; a very old run's `creted_at`)."""
    greeter, shouty, deleted = ObjectId(), ObjectId(), ObjectId()
    done, nil_maps, typo, orphan, left = (ObjectId() for _ in range(5))
    return {
        "project": [
            {"_id": ObjectId(), "uuid": PROJECT, "name": "Main", "created_at": NOW,
             "updated_at": NOW, "authorizations": [{"useremail": "Ana@Example.com",
                                                    "role": "3"}]},
            {"_id": ObjectId(), "uuid": "old-text-project", "name": "Old",
             "created_at": NOW, "updated_at": NOW, "authorizations": None},
        ],
        "user_permissions": [
            {"_id": ObjectId(), "project_uuid": PROJECT, "email": "Ana@Example.com", "role": 3,
             "created_at": NOW, "updated_at": NOW},
            {"_id": ObjectId(), "project_uuid": "old-text-project", "email": "x@example.com",
             "role": 1, "created_at": NOW, "updated_at": NOW},
        ],
        "codelib": [{"_id": ObjectId(), "name": "pandas", "language": "python",
                     "updated_at": NOW}],
        "code": [
            {"_id": greeter, "name": "greeter", "type": "endpoint", "language": "python",
             "source": "def Run(engine):\n    pass\n", "url": "", "project_uuid": PROJECT,
             "timeout": 30, "created_at": NOW - timedelta(days=100), "updated_at": NOW},
            {"_id": shouty, "name": "shouty", "type": "flow", "language": "go",
             "source": "package main", "project_uuid": "old-text-project", "timeout": 0,
             "created_at": NOW - timedelta(days=90), "updated_at": NOW},
            {"_id": ObjectId(), "name": "bad", "type": "endpoint", "language": "ruby",
             "source": "", "project_uuid": PROJECT, "created_at": NOW, "updated_at": NOW},
        ],
        "coderun": [
            {"_id": done, "code_id": greeter, "status": "completed", "result": "ok",
             "extra": {"status_code": 201, "content_type": "json"}, "params": {"a": "1"},
             "body": "{}", "headers": {"X-Multi": ["a", "b"]},
             "created_at": NOW - timedelta(minutes=10), "updated_at": NOW},
            {"_id": nil_maps, "code_id": greeter, "status": "failed", "result": "boom",
             "extra": None, "params": None, "body": "", "headers": None,
             "created_at": NOW - timedelta(minutes=9), "updated_at": NOW},
            {"_id": typo, "code_id": shouty, "status": "completed", "result": "",
             "creted_at": NOW - timedelta(days=80), "updated_at": NOW - timedelta(days=80)},
            {"_id": orphan, "code_id": deleted, "status": "completed", "result": "orphaned",
             "created_at": NOW - timedelta(days=1), "updated_at": NOW - timedelta(days=1)},
            {"_id": left, "code_id": greeter, "status": "started",
             "created_at": NOW - timedelta(hours=3), "updated_at": NOW - timedelta(hours=3)},
        ],
        "codelog": [
            {"_id": ObjectId(), "run_id": done, "code_id": greeter, "type": "info",
             "content": f"line {n}", "created_at": NOW - timedelta(minutes=10, seconds=-n),
             "updated_at": NOW}
            for n in range(3)
        ] + [
            {"_id": ObjectId(), "run_id": orphan, "code_id": deleted, "type": "error",
             "content": "orphan's", "created_at": NOW - timedelta(days=1), "updated_at": NOW},
            {"_id": ObjectId(), "run_id": ObjectId(), "code_id": greeter, "type": "info",
             "content": "its run was deleted", "created_at": NOW, "updated_at": NOW},
        ],
    }


def fake_mongo(documents: dict[str, list[dict]]):  # noqa: ANN201
    database = mongomock.MongoClient(tz_aware=True)["code-actions"]
    for name, docs in documents.items():
        database[name].insert_many([dict(doc) for doc in docs])
    return database


@pytest.fixture(scope="module")
def target(platform: Platform) -> Iterator[str]:
    """A PostgreSQL database of ours, freshly migrated, for the MongoDB data."""
    base = platform.settings().sqlalchemy_url
    name = f"mongo_{uuid.uuid4().hex[:8]}"
    url = legacy.create_database(base, name)
    migrated = legacy.run_cli(legacy.env_for(platform, url), "migrate")
    assert migrated.returncode == 0, migrated.stderr
    yield url
    legacy.drop_database(base, name)


@pytest.fixture(scope="module")
def imported(target: str) -> Iterator[tuple[dict[str, list[dict]], dict, str, object]]:
    documents = mongo_era_documents()
    database = fake_mongo(documents)
    engine = create_engine(target)
    out = io.StringIO()
    results = MongoImporter(engine, database, out, batch_size=2).run()
    yield documents, results, out.getvalue(), (engine, database)
    engine.dispose()


def test_counts_and_the_summary(imported):  # noqa: ANN001
    _, results, out, _ = imported
    assert {what: (c.scanned, c.imported, c.errors) for what, c in results.items()} == {
        "projects": (2, 2, 0), "permissions": (2, 2, 0), "libraries": (1, 1, 0),
        "codes": (3, 2, 1), "runs": (5, 5, 0), "logs": (5, 4, 0)}
    assert results["logs"].run_gone == 1
    assert "language 'ruby' is not one of" in out
    assert "import-mongo finished" in out and "code: " in out  # progress per collection


def test_ids_and_fields_are_kept(imported, platform: Platform, target: str):  # noqa: ANN001
    documents, _, _, _ = imported
    greeter, shouty = documents["code"][0], documents["code"][1]
    done, nil_maps, typo, orphan, left = documents["coderun"]
    with legacy.serve_api(platform, target) as api:
        code = requests.get(f"{api}/code/{greeter['_id']}").json()
        assert (code["mongo_object_id"], code["name"], code["timeout"], code["compat"]) == (
            str(greeter["_id"]), "greeter", 30, "legacy")
        assert code["project_uuid"] == PROJECT and code["url"] is None
        assert datetime.fromisoformat(code["created_at"]) == greeter["created_at"]
        old = requests.get(f"{api}/code/{shouty['_id']}").json()
        assert old["project_uuid"] == str(project_uuid_for("old-text-project")[0])
        assert old["timeout"] == 60
        listed = requests.get(f"{api}/code", params={"project_uuid": "old-text-project"})
        assert [c["id"] for c in listed.json()] == [old["id"]]

        run = requests.get(f"{api}/coderun/{done['_id']}").json()
        assert (run["code_id"], run["code_mongo_id"]) == (code["id"], str(greeter["_id"]))
        assert (run["extra"], run["params"], run["headers"], run["body"]) == (
            done["extra"], done["params"], done["headers"], done["body"])
        nulls = requests.get(f"{api}/coderun/{nil_maps['_id']}").json()
        assert (nulls["extra"], nulls["params"], nulls["headers"]) == ({}, {}, {})
        dated = requests.get(f"{api}/coderun/{typo['_id']}").json()
        assert datetime.fromisoformat(dated["created_at"]) == typo["creted_at"]
        unfinished = requests.get(f"{api}/coderun/{left['_id']}").json()
        assert (unfinished["status"], unfinished["worker"]) == ("started", "flows-code-actions")
        runs = requests.get(f"{api}/coderun", params={"code_id": str(greeter["_id"])}).json()
        assert [r["mongo_object_id"] for r in runs] == [str(d["_id"]) for d in
                                                          (nil_maps, done, left)]
        orphans = requests.get(f"{api}/coderun", params={"code_id": str(orphan["code_id"])})
        assert [r["result"] for r in orphans.json()] == ["orphaned"]

        logs = requests.get(f"{api}/codelog",
                            params={"run_id": str(done["_id"]), "order": "asc"}).json()
        assert [entry["content"] for entry in logs["data"]] == ["line 0", "line 1", "line 2"]
        by_code = requests.get(f"{api}/codelog", params={"code_id": str(greeter["_id"])})
        assert by_code.json()["total"] == 3
        first = documents["codelog"][0]
        one = requests.get(f"{api}/codelog/{first['_id']}").json()
        assert (one["mongo_object_id"], one["content"]) == (str(first["_id"]), "line 0")
    engine = create_engine(target)
    with engine.connect() as connection:
        project = connection.execute(text(
            "SELECT authorizations FROM projects WHERE uuid = :u"), {"u": PROJECT}).scalar_one()
        library = connection.execute(text(
            "SELECT catalog FROM codelibs WHERE name = 'pandas'")).scalar_one()
    engine.dispose()
    assert project == [{"user_email": "Ana@Example.com", "role": 3}]
    assert library is False


def test_a_second_import_adds_nothing(imported, target: str):  # noqa: ANN001
    _, _, _, (engine, database) = imported
    before = legacy.snapshot(target)
    results = MongoImporter(engine, database, io.StringIO(), batch_size=2).run()
    assert sum(c.imported for c in results.values()) == 0
    again = MongoImporter(engine, database, io.StringIO(), batch_size=2, restart=True).run()
    assert sum(c.imported for c in again.values()) == 0
    assert again["runs"].already == 5
    after = legacy.snapshot(target)
    before.pop("rows:import_checkpoints"), after.pop("rows:import_checkpoints")
    assert after == before


class DroppingDatabase:
    """A MongoDB that loses its connection after `fail_after` reads (pymongo's AutoReconnect),
    as a real server going away mid-import would."""

    def __init__(self, database, fail_after: int) -> None:  # noqa: ANN001
        self._database, self.reads_left = database, fail_after
        self.name = database.name

    def list_collection_names(self) -> list[str]:
        return self._database.list_collection_names()

    def __getitem__(self, name: str):  # noqa: ANN204
        owner = self

        class Collection:
            def find(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
                owner.reads_left -= 1
                if owner.reads_left < 0:
                    raise AutoReconnect("connection closed")
                return owner._database[name].find(*args, **kwargs)

        return Collection()


def test_an_interrupted_import_continues_where_it_stopped(platform: Platform):
    base = platform.settings().sqlalchemy_url
    name = f"mongo_{uuid.uuid4().hex[:8]}"
    url = legacy.create_database(base, name)
    try:
        assert legacy.run_cli(legacy.env_for(platform, url), "migrate").returncode == 0
        documents = mongo_era_documents()
        documents["coderun"] += [
            {"_id": ObjectId(), "code_id": documents["code"][0]["_id"], "status": "completed",
             "result": str(n), "created_at": NOW, "updated_at": NOW} for n in range(40)]
        database = fake_mongo(documents)
        engine = create_engine(url)
        with pytest.raises(MongoImportAborted, match="connection closed"):
            MongoImporter(engine, DroppingDatabase(database, 12), io.StringIO(),
                          batch_size=4).run()
        with engine.connect() as connection:
            partial = connection.execute(text("SELECT count(*) FROM coderuns")).scalar_one()
        assert 0 < partial < 45
        out = io.StringIO()
        results = MongoImporter(engine, database, out, batch_size=4).run()
        assert "coderun: continuing after _id" in out.getvalue()
        assert (results["runs"].imported, results["runs"].already) == (45 - partial, 0)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM coderuns")).scalar_one() == 45
            assert connection.execute(text("SELECT count(*) FROM codelogs")).scalar_one() == 4
        engine.dispose()
    finally:
        legacy.drop_database(base, name)


@pytest.mark.parametrize("command", [
    ["api"], ["worker", "--language", "python"], ["beat"], ["events"], ["migrate"],
    ["import-logs"],
])
def test_db_type_mongodb_makes_every_process_refuse_to_start(platform: Platform, command):  # noqa: ANN001
    env = {**platform.env, "FLOWS_CODE_ACTIONS_DB_TYPE": "mongodb"}
    refused = legacy.run_cli(env, *command, timeout=60)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "FLOWS_CODE_ACTIONS_DB_TYPE=mongodb is not supported" in refused.stderr
    assert "codeactions import-mongo --mongo-uri" in refused.stderr


def test_import_mongo_runs_with_the_old_environment_and_says_when_mongo_is_away(
        platform: Platform):
    env = {**platform.env, "FLOWS_CODE_ACTIONS_DB_TYPE": "mongodb"}
    port = legacy.free_port()  # nothing listens there
    away = legacy.run_cli(env, "import-mongo", "--mongo-uri", f"mongodb://127.0.0.1:{port}",
                          "--mongo-db", "code-actions", timeout=60)
    assert away.returncode == 1, away.stdout + away.stderr
    assert "MongoDB is unreachable" in away.stderr and "run it again" in away.stderr
    missing = legacy.run_cli(platform.env, "import-mongo", timeout=60)
    assert missing.returncode == 2 and "--mongo-uri" in missing.stderr
