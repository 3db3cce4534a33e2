// Sharing: models shared with me; my shares with grant and revoke.
import { api } from "../api";
import { append, clear, confirmAction, el, field, fmtTime, table } from "../dom";
import { notice, showError } from "../messages";
import { modelName, onChange } from "../state";

export async function sharingView(main: HTMLElement): Promise<() => void> {
  const withMe = el("div", { id: "shared-with-me" });
  const mine = el("div", { id: "my-shares" });
  append(main, el("h2", {}, "Sharing"), el("h3", {}, "Shared with me"), withMe, el("h3", {}, "My shares"), mine);

  const loadWithMe = async () => {
    const reply = await api.listSharedVoiceModels({ limit: 100 });
    clear(withMe);
    append(
      withMe,
      reply.sharedModels.length
        ? table(
            ["Model", "Shared by", "Permission", "Since"],
            reply.sharedModels.map((s) =>
              el("tr", { "data-model-id": s.model?.id }, el("td", {}, s.model ? el("a", { href: `#/model/${encodeURIComponent(s.model.id)}` }, modelName(s.model)) : "?"), el("td", {}, s.sharedBy), el("td", {}, s.permission), el("td", {}, fmtTime(s.sharedAt))),
            ),
          )
        : el("p", {}, "Nothing is shared with you."),
    );
  };
  await loadWithMe();
  await mySharesPanel(mine);
  return onChange((event) => {
    if (event.type === "shared" || event.type === "share_revoked") void loadWithMe().catch(showError);
  });
}

/** Grant and revoke; the list of what I have shared comes with ListModelShares. */
async function mySharesPanel(box: HTMLElement): Promise<void> {
  const models = await api.listVoiceModels({ limit: 100 });
  const model = el("select", { id: "share-model" }, ...models.models.map((m) => el("option", { value: m.id }, modelName(m))));
  const target = el("input", { id: "share-target", autocomplete: "off" });
  const permission = el("select", { id: "share-permission" }, el("option", { value: "view" }, "view"), el("option", { value: "use" }, "use"));
  const form = el("form", { id: "share-form", class: "row" }, field("Model", model), field("User id", target), field("Permission", permission), el("button", { type: "submit" }, "Share"));
  const list = el("div", { id: "share-list" });
  append(box, form, list);
  const load = async () => {
    const reply = await api.listModelShares({ limit: 100 });
    clear(list);
    append(
      list,
      reply.shares.length
        ? table(
            ["Model", "With", "Permission", "Since", ""],
            reply.shares.map((s) =>
              el(
                "tr",
                { "data-share": `${s.modelId}:${s.targetUserId}` },
                el("td", {}, models.models.find((m) => m.id === s.modelId) ? modelName(models.models.find((m) => m.id === s.modelId)!) : s.modelId),
                el("td", {}, s.targetUserId),
                el("td", {}, s.permission),
                el("td", {}, fmtTime(s.sharedAt)),
                el("td", {}, el("button", { type: "button", "data-action": "revoke", onclick: async () => {
                  if (!(await confirmAction("Revoke", `${s.targetUserId} can no longer see or use this model.`))) return;
                  try {
                    await api.revokeShare({ modelId: s.modelId, targetUserIds: [s.targetUserId] });
                    notice("Share revoked.");
                    await load();
                  } catch (error) {
                    showError(error);
                  }
                } }, "Revoke")),
              ),
            ),
          )
        : el("p", {}, "You have shared nothing."),
    );
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.shareVoiceModel({ modelId: model.value, targetUserIds: [target.value.trim()], permissions: [permission.value] });
      notice(`Shared with ${target.value.trim()}.`);
      await load();
    } catch (error) {
      showError(error);
    }
  });
  await load();
}
