"""Publishing a trained version so that no request fails and none mixes versions:

1. save it in the model store (weights, TorchScript towers, the gateway's id -> row maps);
2. add it to Triton beside the live version and wait until both towers report it ready;
3. embed every catalogue item with its item tower into the version's own retrieval index;
4. point `live.json` at it: gateways switch once they see it ready everywhere;
5. embed the items that changed during steps 3-4 (a second pass over the catalogue);
6. after a grace period (requests that started on the old version finish, every gateway
   has switched), retire the old version: Triton unloads it, its index is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from recsys.features.v1 import features_pb2, features_pb2_grpc
from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.trainer.features_reader import catalogue_pages
from services.trainer.model_training import (
    USERS_FILE,
    TrainedModel,
    forget_users,
    load_trained,
    load_vocabulary,
    save_trained,
)
from services.trainer.two_tower import Vocabulary, export_towers, tower_io
from shared.embedding_client import EmbeddingClient
from shared.model_store import LiveVersion, ModelStore, index_categories, model_name
from shared.triton_repository import GPU_SERVING, TOWERS, Repository, Serving, Variant

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    pass


@dataclass(frozen=True)
class PublishSettings:
    grace_s: float = 10.0
    # The version a publish replaces stays loaded with its index, so that a rollback to it
    # is a switch, not a reload.
    keep_previous: bool = True
    load_timeout_s: float = 300.0
    call_timeout_s: float = 30.0
    # What Triton runs the towers with: "python", the bundled server's Python backend on CPU
    # (the local default), or "pytorch_libtorch", the official image's PyTorch backend on
    # GPUs (RECSYS_TRAINER_TRITON_PLATFORM; k8s/overlays/gpu).
    triton_variant: Variant = "python"


@dataclass
class PublishReport:
    version: int
    items: int = 0
    save_s: float = 0.0
    load_s: float = 0.0
    embed_s: float = 0.0
    switch_s: float = 0.0  # until live.json names the version
    catch_up_items: int = 0
    total_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


class Publisher:
    def __init__(
        self,
        store: ModelStore,
        embedding: EmbeddingClient,
        features: features_pb2_grpc.FeaturesServiceStub,
        retrieval: retrieval_pb2_grpc.RetrievalServiceStub,
        settings: PublishSettings = PublishSettings(),
    ) -> None:
        self.store = store
        self.embedding = embedding
        self.features = features
        self.retrieval = retrieval
        self.settings = settings
        self.repository = Repository(
            store.repository,
            variant=settings.triton_variant,
            serving=GPU_SERVING if settings.triton_variant == "pytorch_libtorch" else Serving(),
        )

    async def publish(self, trained: TrainedModel, retire: bool = True) -> PublishReport:
        started = time.monotonic()
        version = self.store.next_version()
        report = PublishReport(version)
        live = self.store.live()
        await asyncio.to_thread(self._save, version, trained)
        report.save_s = time.monotonic() - started

        mark = time.monotonic()
        keep = [live.version] if live else []
        await self._serve_versions(trained, keep + [version])
        report.load_s = time.monotonic() - mark

        mark = time.monotonic()
        index = model_name(version)
        await self.retrieval.DropIndex(
            retrieval_pb2.DropIndexRequest(index=index), timeout=self.settings.call_timeout_s
        )
        embedded = await self._embed_catalogue(version, trained.items, index)
        report.items = len(embedded)
        report.embed_s = time.monotonic() - mark

        self.store.set_live(
            LiveVersion(
                version=version,
                published_at=time.time(),
                trained_through_offset=trained.trained_through_offset,
                previous=live.version if live else None,
                newest_event_appended_at=trained.newest_event_appended_at,
                metrics=dict(trained.metrics),
            )
        )
        report.switch_s = time.monotonic() - started
        report.catch_up_items = await self._catch_up(version, trained.items, index, embedded)
        log.info(
            "published",
            extra={"version": version, "items": report.items, "switch_s": report.switch_s},
        )
        if retire:
            await asyncio.sleep(self.settings.grace_s)
            kept = [live.version] if live and self.settings.keep_previous else []
            await self.retire_all_but([*kept, version], trained)
        report.total_s = time.monotonic() - started
        return report

    def _save(self, version: int, trained: TrainedModel) -> None:
        directory = self.store.version_dir(version)
        save_trained(trained, directory / "weights")
        paths = export_towers(trained.model, directory / "torchscript")
        for tower in TOWERS:
            self.repository.add_version(tower, version, paths[tower])
        self.store.write_serving(
            version,
            trained.tower.history_len,
            trained.tower.dim,
            trained.users.ids,
            trained.items.ids,
            trained.trained_through_offset,
            trained.ranking,
        )

    async def _serve_versions(self, trained: TrainedModel, versions: list[int]) -> None:
        """Lists `versions` in both towers' configs and has Triton (re)load them; versions
        already loaded keep serving throughout."""
        io = tower_io(trained.tower)

        async def serve(tower: str) -> None:
            listed = [v for v in versions if self.repository.version_dir(tower, v).exists()]
            self.repository.set_versions(tower, io[tower], listed)
            await self.embedding.load(tower, self.settings.load_timeout_s)
            for version in listed:
                if not await self.embedding.ready(tower, version, self.settings.call_timeout_s):
                    raise PublishError(f"Triton did not make {tower} version {version} ready")

        await asyncio.gather(*(serve(tower) for tower in TOWERS))

    async def _embed(
        self, version: int, items: Vocabulary, page: list[features_pb2.ItemVector]
    ) -> list[retrieval_pb2.VectorRecord]:
        rows = items.rows(v.item_id for v in page).reshape(-1, 1)
        content = np.array([list(v.vector) for v in page], dtype=np.float32)
        vectors = await self.embedding.item_vectors(
            version, rows, content, self.settings.call_timeout_s
        )
        return [
            retrieval_pb2.VectorRecord(
                item_id=v.item_id,
                vector=vectors[i].tolist(),
                categories=index_categories(v.categories, int(rows[i, 0])),
            )
            for i, v in enumerate(page)
        ]

    async def _upsert(self, index: str, records: list[retrieval_pb2.VectorRecord]) -> None:
        await self.retrieval.UpsertVectors(
            retrieval_pb2.UpsertVectorsRequest(index=index, records=records),
            timeout=self.settings.call_timeout_s,
        )

    async def _embed_catalogue(self, version: int, items: Vocabulary, index: str) -> set[str]:
        embedded: set[str] = set()
        async for page in catalogue_pages(self.features, self.settings.call_timeout_s):
            await self._upsert(index, await self._embed(version, items, page))
            embedded.update(v.item_id for v in page)
        return embedded

    async def _catch_up(
        self, version: int, items: Vocabulary, index: str, embedded: set[str]
    ) -> int:
        """Items upserted while the catalogue was embedded went to the old version's index
        only; items deleted meanwhile are still in the new one."""
        present: set[str] = set()
        added = 0
        async for page in catalogue_pages(self.features, self.settings.call_timeout_s):
            present.update(v.item_id for v in page)
            fresh = [v for v in page if v.item_id not in embedded]
            if fresh:
                await self._upsert(index, await self._embed(version, items, fresh))
                added += len(fresh)
        gone = sorted(embedded - present)
        for start in range(0, len(gone), 1_000):
            await self.retrieval.DeleteVectors(
                retrieval_pb2.DeleteVectorsRequest(
                    index=index, item_ids=gone[start : start + 1_000]
                ),
                timeout=self.settings.call_timeout_s,
            )
        return added

    async def retire_all_but(self, keep: list[int], trained: TrainedModel) -> None:
        """Unloads every version but `keep` from Triton and drops its index; its trained
        weights stay in the store."""
        keep = sorted(set(keep))
        if any(self.repository.listed_versions(tower) != keep for tower in TOWERS):
            await self._serve_versions(trained, keep)
        for tower in TOWERS:
            for old in self.repository.versions_on_disk(tower):
                if old not in keep:
                    self.repository.remove_version(tower, old)
        for old in self.store.versions():
            if old in keep:
                continue
            try:
                await self.retrieval.DropIndex(
                    retrieval_pb2.DropIndexRequest(index=model_name(old)),
                    timeout=self.settings.call_timeout_s,
                )
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "could not drop an old index", extra={"version": old, "why": str(error)}
                )
            shutil.rmtree(self.store.version_dir(old) / "torchscript", ignore_errors=True)

    def forget_users(self, user_ids: set[str]) -> dict[str, int]:
        """Every stored version written again without these users (the id maps of
        serving.json and of its weights, and their rows in the weights); how many versions
        each user was in. The TorchScript towers Triton serves keep the rows' vectors, with
        no id leading to them."""
        counts: dict[str, int] = {}
        self.discard_incomplete()  # their files may hold the users, and no serving.json
        for version in self.store.versions():
            found = self.store.forget_users(version, user_ids)
            weights = self.store.version_dir(version) / "weights"
            if weights.exists() and user_ids & set(load_vocabulary(weights, USERS_FILE).ids):
                trained = load_trained(weights)
                found |= set(forget_users(trained, user_ids))
                save_trained(trained, weights)
            for user in found:
                counts[user] = counts.get(user, 0) + 1
        return counts

    def discard_incomplete(self) -> list[int]:
        """Removes the versions whose publish was stopped part way (`ModelStore.is_complete`),
        with their towers in Triton's repository, which no config lists yet."""
        discarded = [v for v in self.store.versions() if not self.store.is_complete(v)]
        for version in discarded:
            for tower in TOWERS:
                self.repository.remove_version(tower, version)
            shutil.rmtree(self.store.version_dir(version), ignore_errors=True)
        if discarded:
            log.warning("discarded unfinished versions", extra={"versions": discarded})
        return discarded

    async def rollback(self, trained: TrainedModel) -> int:
        """Serves the live version's predecessor again: it is still loaded with its index
        (`keep_previous`), so the switch is at once. Returns the version rolled back from.
        `trained` is the predecessor's model; `reconcile` brings its index up to date."""
        live = self.store.live()
        if live is None or live.previous is None:
            raise PublishError("there is no previous version to roll back to")
        target = live.previous
        for tower in TOWERS:
            if not await self.embedding.ready(tower, target, self.settings.call_timeout_s):
                await self._serve_versions(trained, [target, live.version])
                break
        self.store.set_live(
            LiveVersion(
                version=target,
                published_at=time.time(),
                trained_through_offset=trained.trained_through_offset,
                previous=None,
                newest_event_appended_at=trained.newest_event_appended_at,
                metrics=dict(trained.metrics),
            )
        )
        return live.version

    async def reconcile(self, version: int, trained: TrainedModel) -> None:
        """A version serving again gets the items that arrived since it last served and
        loses the ones deleted since."""
        index = model_name(version)
        embedded = await self._embed_catalogue(version, trained.items, index)
        gone = sorted(set(self.store.serving(version).items) - embedded)
        for start in range(0, len(gone), 1_000):
            await self.retrieval.DeleteVectors(
                retrieval_pb2.DeleteVectorsRequest(
                    index=index, item_ids=gone[start : start + 1_000]
                ),
                timeout=self.settings.call_timeout_s,
            )
