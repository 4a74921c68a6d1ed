// Intrusive doubly linked list. Each list names the hook member it uses, so one object can
// sit on several lists at once (STYLE.md 6). A hook asserts it is unlinked when destroyed.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>

namespace faasvisor {

struct ListHook {
  ListHook *prev = nullptr;
  ListHook *next = nullptr;

  ListHook() = default;
  ListHook(const ListHook &) = delete;
  ListHook &operator=(const ListHook &) = delete;
  ~ListHook() { assert(!linked() && "object destroyed while still on a list"); }
  bool linked() const { return next != nullptr; }
};

template <typename T, ListHook T::*Hook>
class IntrusiveList {
 public:
  IntrusiveList() { head_.prev = head_.next = &head_; }
  IntrusiveList(const IntrusiveList &) = delete;
  IntrusiveList &operator=(const IntrusiveList &) = delete;
  ~IntrusiveList() {
    assert(empty() && "list destroyed with elements");
    head_.prev = head_.next = nullptr;  // the sentinel is not an element
  }

  bool empty() const { return head_.next == &head_; }
  size_t size() const { return size_; }

  void push_front(T &item) { insert_after(&head_, item); }
  void push_back(T &item) { insert_after(head_.prev, item); }

  T *front() { return empty() ? nullptr : from_hook(head_.next); }
  T *back() { return empty() ? nullptr : from_hook(head_.prev); }

  T *pop_front() {
    T *item = front();
    if (item) remove(*item);
    return item;
  }
  T *pop_back() {
    T *item = back();
    if (item) remove(*item);
    return item;
  }

  void remove(T &item) {
    ListHook &hook = item.*Hook;
    assert(hook.linked());
    hook.prev->next = hook.next;
    hook.next->prev = hook.prev;
    hook.prev = hook.next = nullptr;
    --size_;
  }

  bool contains(const T &item) const {
    for (const ListHook *h = head_.next; h != &head_; h = h->next)
      if (h == &(item.*Hook)) return true;
    return false;
  }

  // Iteration that tolerates removal of the current element.
  template <typename Fn>
  void for_each(Fn &&fn) {
    for (ListHook *h = head_.next; h != &head_;) {
      ListHook *next = h->next;
      fn(*from_hook(h));
      h = next;
    }
  }

 private:
  static T *from_hook(ListHook *hook) {
    // offsetof for a pointer-to-member. The probe address is arbitrary but non-null and
    // suitably aligned, so UBSan's null/alignment checks stay quiet; nothing is read.
    const T *probe = reinterpret_cast<const T *>(uintptr_t{4096});
    auto offset = reinterpret_cast<uintptr_t>(&(probe->*Hook)) - uintptr_t{4096};
    return reinterpret_cast<T *>(reinterpret_cast<char *>(hook) - offset);
  }

  void insert_after(ListHook *pos, T &item) {
    ListHook &hook = item.*Hook;
    assert(!hook.linked() && "item already on a list");
    hook.prev = pos;
    hook.next = pos->next;
    pos->next->prev = &hook;
    pos->next = &hook;
    ++size_;
  }

  ListHook head_;
  size_t size_ = 0;
};

}  // namespace faasvisor
