"""Stored captures and the properties read from them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.urls import reverse

NS_PER_SECOND = 1_000_000_000


def nanoseconds(seconds: Decimal | None) -> int | None:
    """Return a number of seconds as whole nanoseconds."""
    return None if seconds is None else int(seconds * NS_PER_SECOND)


class Visibility(models.TextChoices):
    PRIVATE = "private", "Only the owner"
    TEAM = "team", "The owner's team"
    LINK = "link", "Anyone holding a share link"


class Tag(models.Model):
    name = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Capture(models.Model):
    """A capture file stored byte for byte under CAPTURES_DIR, with its properties."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="captures",
        help_text="None for files imported without an owner: only staff see those.",
    )
    visibility = models.CharField(max_length=8, choices=Visibility.choices, default=Visibility.PRIVATE)
    team = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="captures")
    tags = models.ManyToManyField(Tag, blank=True, related_name="captures")
    # What the search box looks through besides names, tags and comments: filled in the
    # background after the upload, one space-separated word per host or protocol.
    hosts = models.TextField(blank=True)
    protocols = models.TextField(blank=True)

    name = models.CharField(max_length=255, help_text="File name as uploaded; display only.")
    stored_as = models.CharField(max_length=64, unique=True, help_text="File name under CAPTURES_DIR.")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    uploaded_at = models.DateTimeField(auto_now_add=True)

    file_type = models.CharField(max_length=64)
    encapsulation = models.CharField(max_length=128)
    time_precision = models.CharField(max_length=32)
    precision_digits = models.PositiveSmallIntegerField(default=6)
    packets = models.BigIntegerField()
    data_size = models.BigIntegerField(default=0)
    # Whole nanoseconds: exact for nanosecond files and sortable (SQLite would store a
    # decimal as a float with 15 significant digits and lose the last ones).
    first_ns = models.BigIntegerField(null=True)
    last_ns = models.BigIntegerField(null=True)
    duration_ns = models.BigIntegerField(null=True)
    data_byte_rate = models.FloatField(null=True)
    data_bit_rate = models.FloatField(null=True)
    average_packet_size = models.FloatField(null=True)
    average_packet_rate = models.FloatField(null=True)
    link_types = models.CharField(max_length=255, blank=True)
    comments = models.JSONField(default=list)
    interfaces = models.JSONField(default=list)
    extra = models.JSONField(default=dict, help_text="Other capinfos properties, label to value.")
    warning = models.CharField(max_length=255, blank=True)
    file_comments_read = models.BooleanField(
        default=False, help_text="The file's pcapng comments have been copied into its annotations."
    )

    class Meta:
        ordering = ["-uploaded_at", "-id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("explorer:capture", args=[self.pk])

    @property
    def path(self) -> Path:
        return Path(settings.CAPTURES_DIR) / self.stored_as

    def _seconds(self, nanoseconds: int | None) -> Decimal | None:
        if nanoseconds is None:
            return None
        return (Decimal(nanoseconds) / NS_PER_SECOND).quantize(Decimal(1).scaleb(-self.precision_digits))

    @property
    def first_time(self) -> Decimal | None:
        return self._seconds(self.first_ns)

    @property
    def last_time(self) -> Decimal | None:
        return self._seconds(self.last_ns)

    @property
    def duration(self) -> Decimal | None:
        return self._seconds(self.duration_ns)

    def properties(self) -> dict[str, Any]:
        """Return the properties shown on the page and in the API, in Wireshark's order."""
        return {
            "format": self.file_type,
            "encapsulation": self.encapsulation,
            "time_precision": self.time_precision,
            "packets": self.packets,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "duration": self.duration,
            "data_size": self.data_size,
            "data_byte_rate": self.data_byte_rate,
            "data_bit_rate": self.data_bit_rate,
            "average_packet_size": self.average_packet_size,
            "average_packet_rate": self.average_packet_rate,
        }


class MarkedPacket(models.Model):
    """A frame marked in the packet list (Wireshark's Edit → Mark Packet).

    Marks stay with the capture, so the frames one person set aside are there for everyone
    who opens it, and "marked packets only" exports them.
    """

    capture = models.ForeignKey(Capture, on_delete=models.CASCADE, related_name="marks")
    number = models.PositiveBigIntegerField(help_text="Frame number, from 1.")
    marked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["capture", "number"], name="one_mark_per_frame")]

    def __str__(self) -> str:
        return f"{self.capture} #{self.number}"


class ShareLink(models.Model):
    """A link reproducing one view of a capture (its path and query), read-only for its holder.

    The key is in the URL; `lookup` (its first characters) finds the row and the whole key is
    then compared in constant time.
    """

    capture = models.ForeignKey(Capture, on_delete=models.CASCADE, related_name="share_links")
    lookup = models.CharField(max_length=12, unique=True)
    key = models.CharField(max_length=64)
    view = models.CharField(max_length=4000, help_text="Path and query of the shared view.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"link to {self.capture} ({self.lookup}…)"


class ApiToken(models.Model):
    """A token for scripts: `Authorization: Token <key>`. Only a digest of the key is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    lookup = models.CharField(max_length=12, unique=True)
    digest = models.CharField(max_length=64, help_text="SHA-256 of the key, hex.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.user} {self.name or self.lookup}"


class Annotation(models.Model):
    """A comment on a packet, or on the whole capture when frame is None."""

    capture = models.ForeignKey(Capture, on_delete=models.CASCADE, related_name="annotations")
    frame = models.PositiveBigIntegerField(null=True, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="annotations"
    )
    from_file = models.BooleanField(default=False, help_text="A pcapng comment read from the uploaded file.")
    text = models.TextField(max_length=10_000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["frame", "created_at", "id"]
        indexes = [models.Index(fields=["capture", "frame"])]

    def __str__(self) -> str:
        return f"{self.capture} #{self.frame}: {self.text[:40]}"


class LiveCapture(models.Model):
    """Packets being recorded now, from a server interface or a remote stream, until stored."""

    class Source(models.TextChoices):
        INTERFACE = "interface", "Server interface"
        STREAM = "stream", "Remote stream"

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        STORED = "stored", "Stored"
        FAILED = "failed", "Failed"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="live_captures"
    )
    name = models.CharField(max_length=100, help_text="Display only; the stream's name for remote captures.")
    source = models.CharField(max_length=16, choices=Source.choices)
    interface = models.CharField(max_length=100, blank=True)
    capture_filter = models.CharField(max_length=1000, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    message = models.CharField(max_length=500, blank=True, help_text="Why it stopped, or failed.")
    # The channel-layer channel of the process recording it: stop and hello requests go there.
    control_channel = models.CharField(max_length=200, blank=True)
    # With BACKGROUND_WORKER and REDIS_URL a worker decodes the packets for the viewers: the
    # channel of the worker holding it, until when (renewed while it decodes).
    decoder_channel = models.CharField(max_length=200, blank=True)
    decoder_until = models.DateTimeField(null=True, blank=True)
    # Members of this team watch with the owner, and the stored capture is shared with them.
    team = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="live_captures"
    )
    capture = models.ForeignKey(Capture, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started_at = models.DateTimeField(auto_now_add=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        permissions = [("start_live_capture", "Can capture on the server's interfaces")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("explorer:live_view", args=[self.pk])


class ExportJob(models.Model):
    """An export of displayed packets as pcapng, run by whichever process claims it.

    The row is the job's queue entry: a worker (or, without one, the server that was asked)
    claims it for a lease that it renews while it runs. A process that dies lets the lease
    lapse, and the next to look claims the job again, so a restart loses no export.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    capture = models.ForeignKey(Capture, on_delete=models.CASCADE, related_name="exports")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    filter = models.TextField(blank=True)
    first = models.PositiveBigIntegerField(null=True, blank=True)
    last = models.PositiveBigIntegerField(null=True, blank=True)
    # "Marked packets only": the frames marked when the export was asked for.
    only = models.JSONField(null=True, blank=True)
    annotations = models.BooleanField(default=False, help_text="Annotations become pcapng comments.")
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    error = models.CharField(max_length=500, blank=True)
    # The file under CAPTURES_DIR/.exports once done.
    stored_as = models.CharField(max_length=64, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["state", "claimed_until"], name="export_queue")]

    def __str__(self) -> str:
        return f"export {self.pk} of {self.capture_id}"
