// A small OpenAPI renderer: lists each operation's parameters, request bodies and responses from
// /openapi.json. Self-written so the docs work with no CDN and no build step.
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// "#/components/schemas/Error" -> "Error", linked to the schema section.
function refName(ref) {
  return ref.split("/").pop();
}

function schemaSummary(schema) {
  if (!schema) return "";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.type === "array") return `array of ${schemaSummary(schema.items)}`;
  if (schema.oneOf) return schema.oneOf.map(schemaSummary).join(" | ");
  if (schema.enum) return `${schema.type || ""} one of ${schema.enum.join(", ")}`;
  const bounds = [];
  if (schema.minimum !== undefined) bounds.push(`≥ ${schema.minimum}`);
  if (schema.maximum !== undefined) bounds.push(`≤ ${schema.maximum}`);
  return [schema.type || "any", schema.format, ...bounds].filter(Boolean).join(" ");
}

function schemaLink(schema) {
  if (schema && schema.$ref) {
    const name = refName(schema.$ref);
    return el("a", { href: `#schema-${name}`, textContent: name });
  }
  return el("span", { textContent: schemaSummary(schema) });
}

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col", textContent: h })))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))));
}

function renderOperation(path, method, op) {
  const id = `op-${method}-${path.replace(/[^A-Za-z0-9]+/g, "-")}`;
  const section = el("section", { className: "operation", id });
  section.append(el("h2", {},
    el("span", { className: `method ${method}`, textContent: method.toUpperCase() }),
    el("code", { textContent: path })));
  if (op.summary) section.append(el("p", { textContent: op.summary }));
  if (op.description) section.append(el("p", { className: "help", textContent: op.description }));

  const params = op.parameters || [];
  if (params.length) {
    section.append(el("h3", { textContent: "Parameters" }),
      table(["name", "in", "type", "required", "description"], params.map((p) => [
        el("code", { textContent: p.name }), p.in, schemaLink(p.schema), p.required ? "yes" : "no",
        p.description || ""])));
  }
  if (op.requestBody) {
    const content = op.requestBody.content || {};
    section.append(el("h3", { textContent: "Request body" }),
      table(["content type", "schema", "description"], Object.entries(content).map(([type, media]) => [
        el("code", { textContent: type }), schemaLink(media.schema), media.description || ""])));
  }
  const responses = op.responses || {};
  section.append(el("h3", { textContent: "Responses" }),
    table(["status", "description", "body"], Object.entries(responses).map(([status, r]) => [
      el("strong", { textContent: status }), r.description || "",
      el("span", {}, ...Object.entries(r.content || {}).flatMap(([type, media]) => [
        el("code", { textContent: type }), " ", schemaLink(media.schema), el("br")]))])));
  return section;
}

function render(spec) {
  document.title = `${spec.info.title} ${spec.info.version}`;
  document.getElementById("title").textContent = `${spec.info.title} (${spec.info.version})`;
  document.getElementById("description").textContent = spec.info.description || "";

  const schemes = (spec.components && spec.components.securitySchemes) || {};
  if (Object.keys(schemes).length) {
    document.getElementById("auth").hidden = false;
    document.getElementById("auth-schemes").append(...Object.entries(schemes).map(([name, s]) =>
      el("li", { textContent: `${name}: ${s.type}${s.in ? ` in ${s.in} "${s.name}"` : ""}${s.scheme ? ` (${s.scheme})` : ""}. ${s.description || ""}` })));
  }

  const toc = document.getElementById("toc");
  const operations = document.getElementById("operations");
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of METHODS.filter((m) => item[m])) {
      const section = renderOperation(path, method, item[method]);
      operations.append(section);
      toc.append(el("li", {}, el("a", { href: `#${section.id}`, textContent: `${method.toUpperCase()} ${path}` })));
    }
  }
  const schemas = (spec.components && spec.components.schemas) || {};
  document.getElementById("schemas").append(...Object.entries(schemas).map(([name, schema]) =>
    el("section", { id: `schema-${name}` }, el("h3", { textContent: name }),
      el("pre", { className: "schema", textContent: JSON.stringify(schema, null, 2) }))));
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", async () => {
  try {
    const response = await fetch("openapi.json");
    if (!response.ok) throw new Error(`GET openapi.json: HTTP ${response.status}`);
    render(await response.json());
  } catch (err) {
    const box = document.getElementById("load-error");
    box.textContent = `Could not load the API description: ${err}`;
    box.hidden = false;
  }
});
