"""The IO manager of the frames a billing period's assets hand each other (customers, usage,
invoices, the mapping, the expected charges, …).

One object per asset per period, ``<base>/<asset key>/<period>`` (e.g. ``nexacloud/usage/2026-10-01``),
under ``BILLING_IO_STORE_URL``: an object store every run pod can reach, such as
``s3://bucket/prefix``. Unset, the base is the Dagster instance's storage folder on local disk,
exactly where Dagster's default IO manager puts them (docs/operations.md §4.1).
"""

from dagster import ConfigurableIOManagerFactory, EnvVar, InitResourceContext

# Dagster's pickled filesystem IO manager, the concrete UPathIOManager behind its default
# `fs_io_manager`; it takes a UPath base, so any fsspec store. Not re-exported by `dagster`.
from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager
from pydantic import Field

from fusion_billing_assets.settings import Settings, io_store_options, io_store_url


class BillingFrameStore(ConfigurableIOManagerFactory):
    """Each asset's frame of a billing period, pickled, on local disk or in an fsspec store.

    Pickle is deliberate: it gives back exactly the frame that was stored. The frames hold exact
    ``Decimal`` rates and quantities, ``datetime.date`` objects, nullable ``Int64`` ids,
    timezone-aware timestamps and the ``set_aside`` column of per-record marks; Parquet or CSV
    would coerce some of them (decimals to one fixed scale, dates and object columns to other
    types), and the reconciliation fingerprints its inputs' content, so a re-run reading them back
    must see the same values and dtypes. Loading a pickle can run code, so only this code location
    may write to the store (docs/operations.md §4.1).
    """

    base_url: str | None = Field(
        default=None,
        description="fsspec URL of the store, e.g. s3://bucket/prefix; unset: the instance's storage folder.",
    )
    storage_options: str | None = Field(
        default=None,
        description="JSON object of fsspec storage options, e.g. an endpoint_url (a secret: may hold keys).",
    )

    def create_io_manager(self, context: InitResourceContext) -> PickledObjectFilesystemIOManager:
        if self.base_url is None:
            # What Dagster's default FilesystemIOManager does: frames already stored stay readable.
            return PickledObjectFilesystemIOManager(base_dir=context.instance.storage_directory())
        options = io_store_options(self.storage_options) if self.storage_options else {}
        # No file extension, as the default: the object layout is the same on disk and in a store.
        return PickledObjectFilesystemIOManager(base_dir=io_store_url(self.base_url), **options)


def io_manager_for(settings: Settings) -> BillingFrameStore:
    """The ``io_manager`` resource of the configured store, or of the instance's local disk."""
    store = settings.io_store
    # The URL names an account's bucket and the options may hold keys: EnvVar keeps both out of the UI.
    return BillingFrameStore(
        base_url=EnvVar("BILLING_IO_STORE_URL") if store.url else None,
        storage_options=EnvVar("BILLING_IO_STORE_OPTIONS") if store.options_configured else None,
    )
