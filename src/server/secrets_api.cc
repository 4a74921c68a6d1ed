// /system/secrets, faas-provider's secrets API: GET lists names, POST creates, PUT updates,
// DELETE removes. A change is answered once the store has made it durable (store/store.h),
// and only then enters the node's table, so an instance never gets a value that a crash
// could take back. Values never reach a log line, an error message or another response.
#include <algorithm>

#include "util/json.h"
#include "faasvisor/frame.h"
#include "secrets/request.h"
#include "server/node_impl.h"
#include "util/log.h"

namespace faasvisor {
namespace {

constexpr const char *kJson = "application/json";

// The deployed functions that name `secret`, by name.
std::vector<const pool::Function *> functions_using(const pool::Pool &pool, std::string_view secret) {
  std::vector<const pool::Function *> out;
  pool.for_each_function([&](const pool::Function &fn) {
    const std::vector<std::string> &names = fn.spec().secrets;
    if (std::find(names.begin(), names.end(), secret) != names.end()) out.push_back(&fn);
  });
  return out;
}

std::string join_names(const std::vector<const pool::Function *> &functions) {
  std::string out;
  for (const pool::Function *fn : functions) out += (out.empty() ? "'" : ", '") + fn->name() + "'";
  return out;
}

const char *past_tense(secrets::Change change) {
  switch (change) {
    case secrets::Change::create: return "created";
    case secrets::Change::update: return "updated";
    case secrets::Change::remove: return "deleted";
  }
  return "changed";
}

}  // namespace

void NodeImpl::list_secrets(Connection &conn) {
  std::string body;
  JsonWriter w(body);
  w.begin_array();
  for (const std::string &name : secret_table.names())
    w.begin_object().field("name", name).field("namespace", "openfaas-fn").end_object();
  w.end_array();
  conn.respond(200, kJson, body);
}

void NodeImpl::change_secret(Connection &conn, http::Request &req, secrets::Change change) {
  auto parsed = secrets::parse_secret(req.body, change != secrets::Change::remove);
  if (!parsed) return conn.respond_error(400, parsed.error().message());
  secrets::SecretRequest &r = *parsed;
  const std::string &name = r.name;
  if (secret_table.changing(name) != nullptr)
    return conn.respond_error(409, "a change to secret '" + name + "' is in progress: retry once it is answered");
  bool exists = secret_table.find(name) != nullptr;
  if (change == secrets::Change::create && exists)
    return conn.respond_error(409, "secret '" + name + "' already exists (PUT /system/secrets updates it)");
  if (change != secrets::Change::create && !exists)
    return conn.respond_error(404, "secret '" + name + "' not found");
  std::vector<const pool::Function *> users = functions_using(*pool, name);
  if (change == secrets::Change::remove && !users.empty())
    return conn.respond_error(409, "secret '" + name + "' is used by function" + (users.size() > 1 ? "s " : " ") +
                                       join_names(users) + ": take it out of their \"secrets\" first");
  if (change == secrets::Change::update) {
    for (const pool::Function *fn : users) {
      uint64_t total = secret_table.total_bytes(fn->spec().secrets, name, r.value.size());
      if (total > FV_SECRETS_VALUES_MAX)
        return conn.respond_error(400, "field 'value': function '" + fn->name() + "' would have " + std::to_string(total) +
                                           " bytes of secrets, more than the limit of " +
                                           std::to_string(FV_SECRETS_VALUES_MAX));
    }
  }

  if (!state_has_room(conn)) return;

  secret_table.begin_change(name, change);
  // The table changes in the callback, once the store is done, whether or not the client is
  // still there; then the client gets its answer.
  store::Done reply = conn.durable_reply(202, "{\"status\":\"accepted\"}", "secret '" + name + "' was not stored");
  auto done = [this, name, change, value = r.value, reply = std::move(reply)](Status st) mutable {
    secret_stored(name, change, value, st);
    reply(st);
  };
  Status issued = change == secrets::Change::remove ? state->remove(store::kind::secret, name, std::move(done))
                                                    : state->put(store::kind::secret, name, r.value, std::move(done));
  secrets::wipe(r.value);
  if (!issued.ok()) {
    secret_table.end_change(name);
    int status = issued.error().errno_value == EAGAIN ? 503 : 500;
    return conn.respond_error(status, "secret '" + name + "' was not stored: " + issued.error().message(),
                              status == 503 ? "Retry-After: 1\r\n" : "");
  }
}

void NodeImpl::secret_stored(const std::string &name, secrets::Change change, std::string &value,
                             const Status &stored) {
  secret_table.end_change(name);
  if (stored.ok()) {
    if (change == secrets::Change::remove) secret_table.erase(name);
    else secret_table.set(name, std::move(value));
    FV_INFO("secret %s %s", name.c_str(), past_tense(change));
    if (change == secrets::Change::update) {
      // Like a function update: warm instances retire now, busy ones when they finish, so
      // every instance started from here on reads the new value.
      for (const pool::Function *fn : functions_using(*pool, name))
        pool->update(std::make_shared<FunctionSpec>(fn->spec()));
    }
  } else {
    FV_WARN("secret %s not %s: %s", name.c_str(), past_tense(change), stored.error().message().c_str());
  }
  secrets::wipe(value);
}

void NodeImpl::restore_secrets(const std::vector<const store::Record *> &records) {
  for (const store::Record *rec : records) {
    const store::Record &record = *rec;
    if (!secrets::valid_secret_name(record.key) || record.value.size() > FV_SECRET_VALUE_MAX) {
      FV_WARN("state: skipping secret record '%s' (bad name or value too large)", record.key.c_str());
      continue;
    }
    secret_table.set(record.key, record.value);
  }
  if (secret_table.size() > 0) FV_INFO("state: %zu secrets restored", secret_table.size());
}

}  // namespace faasvisor
