// Backups: create with live progress, list, download, restore with its options.
import { api } from "../api";
import { append, clear, confirmAction, el, field, fmtBytes, fmtTime, table } from "../dom";
import { notice, showError } from "../messages";
import { downloadBackup } from "../files";

export async function backupsView(main: HTMLElement): Promise<void> {
  const includeDeleted = el("input", { id: "backup-include-deleted", type: "checkbox" });
  const progress = el("progress", { id: "backup-progress", max: 1, value: 0, "aria-label": "Backup progress" });
  const status = el("span", { id: "backup-status", role: "status" });
  const create = el("button", { type: "button", id: "backup-create" }, "Create backup");
  const list = el("div", { id: "backup-list" });
  append(
    main,
    el("h2", {}, "Backups"),
    el("p", {}, "A backup holds your models and their files. Creating one counts against the daily backup limit."),
    el("div", { class: "row" }, field("Include deleted models", includeDeleted), create, progress, status),
    list,
  );

  const load = async () => {
    const reply = await api.listBackups({ limit: 50 });
    clear(list);
    append(
      list,
      reply.backups.length
        ? table(
            ["Created", "Models", "Size", "SHA-256", ""],
            reply.backups.map((b) => {
              const overwrite = el("input", { type: "checkbox", "data-option": "overwrite" });
              const activate = el("input", { type: "checkbox", "data-option": "activate" });
              const restore = el("button", { type: "button", "data-action": "restore" }, "Restore");
              restore.addEventListener("click", async () => {
                const text =
                  `Models of this backup (${b.modelCount}) come back. ` +
                  (overwrite.checked ? "Models that exist already are overwritten with the backup's version. " : "Models that exist already are kept and skipped. ") +
                  (activate.checked ? "The backup's active model becomes active." : "Your active model does not change.");
                if (!(await confirmAction("Restore backup", text))) return;
                try {
                  const r = await api.restoreBackup({ backupPath: b.backupPath, overwriteExisting: overwrite.checked, activateRestored: activate.checked });
                  notice(`Restored ${r.restored}, skipped ${r.skipped}, overwritten ${r.overwritten}${r.activeModelId ? `; active: ${r.activeModelId}` : ""}.`);
                  byIdText("restore-result", `restored ${r.restored} · skipped ${r.skipped} · overwritten ${r.overwritten}`);
                } catch (error) {
                  showError(error);
                }
              });
              const get = el("button", { type: "button", "data-action": "download" }, "Download");
              get.addEventListener("click", () => {
                get.disabled = true;
                downloadBackup(b.backupId, (done, total) => (get.textContent = `Downloading ${total ? Math.floor((done / total) * 100) : 100}%`))
                  .then(() => notice("Backup downloaded."), showError)
                  .finally(() => {
                    get.disabled = false;
                    get.textContent = "Download";
                  });
              });
              return el(
                "tr",
                { "data-backup-id": b.backupId },
                el("td", {}, fmtTime(b.createdAt)),
                el("td", {}, `${b.modelCount}${b.includeDeleted ? " (with deleted)" : ""}`),
                el("td", {}, fmtBytes(b.sizeBytes)),
                el("td", { class: "mono" }, b.sha256),
                el("td", {}, el("div", { class: "row" }, get, el("label", { class: "inline" }, overwrite, "Overwrite existing"), el("label", { class: "inline" }, activate, "Activate restored"), restore)),
              );
            }),
          )
        : el("p", {}, "No backups yet."),
      el("p", { id: "restore-result", role: "status" }),
    );
  };

  create.addEventListener("click", async () => {
    create.disabled = true;
    status.textContent = "Starting…";
    try {
      for await (const reply of api.createBackup({ includeDeleted: includeDeleted.checked })) {
        if (reply.progress) {
          progress.max = Math.max(1, reply.progress.modelsTotal);
          progress.value = reply.progress.modelsDone;
          status.textContent = `${reply.progress.modelsDone} of ${reply.progress.modelsTotal} models, ${fmtBytes(reply.progress.bytesWritten)}`;
        }
        if (reply.backup) {
          progress.value = progress.max;
          status.textContent = `Backup done: ${reply.backup.modelCount} models, ${fmtBytes(reply.backup.sizeBytes)}.`;
        }
      }
      await load();
    } catch (error) {
      status.textContent = "Backup failed.";
      showError(error);
    } finally {
      create.disabled = false;
    }
  });
  await load();
}

function byIdText(id: string, text: string): void {
  const node = document.getElementById(id);
  if (node) node.textContent = text;
}
