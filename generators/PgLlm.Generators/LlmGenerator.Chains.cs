using System.Collections.Generic;
using System.Linq;
using Microsoft.CodeAnalysis;
using PgLlm.Generators.Model;

namespace PgLlm.Generators;

public sealed partial class LlmGenerator
{
    /// <summary>
    /// The order of a table's tasks: a task that reads a column another task writes (its upstream) runs after it,
    /// and so after every task upstream of that one. A cycle of such tasks (each waiting for the next) is an error,
    /// PGLLM017, on every task of it; a task reading its own target is PGLLM002, reported where its prompt is read.
    /// </summary>
    internal static class Chains
    {
        /// <summary>The tasks with their upstreams (<see cref="TaskSpec.After"/>), or as given with a PGLLM017 per task in a cycle.</summary>
        public static List<TaskSpec> Order(List<TaskSpec> tasks, Dictionary<string, Location?> promptLocations, List<DiagnosticInfo> diagnostics)
        {
            var direct = tasks.ToDictionary(t => t.Name, t => DirectUpstreams(t, tasks));
            var cyclic = false;
            foreach (var task in tasks)
            {
                if (CycleThrough(task.Name, direct) is { } cycle)
                {
                    cyclic = true;
                    diagnostics.Add(Parser.Diagnostic(DiagnosticDescriptors.TasksInCycle, promptLocations[task.Name], task.Name, string.Join(" -> ", cycle)));
                }
            }

            if (cyclic)
            {
                return tasks;
            }

            return tasks.Select(t => t with { After = AllUpstreams(t.Name, direct, tasks).ToEquatableArray() }).ToList();
        }

        /// <summary>The other tasks that write a column <paramref name="task"/> reads, in declaration order.</summary>
        private static List<string> DirectUpstreams(TaskSpec task, List<TaskSpec> tasks) =>
            tasks.Where(w => w.Name != task.Name && w.Targets.Any(x => task.ReadColumns.Contains(x.Column))).Select(w => w.Name).ToList();

        /// <summary>Every task upstream of <paramref name="name"/>, directly or not, in declaration order.</summary>
        private static IEnumerable<string> AllUpstreams(string name, Dictionary<string, List<string>> direct, List<TaskSpec> tasks)
        {
            var seen = new HashSet<string>();
            var stack = new Stack<string>(direct[name]);
            while (stack.Count > 0)
            {
                var next = stack.Pop();
                if (seen.Add(next))
                {
                    foreach (var upstream in direct[next])
                    {
                        stack.Push(upstream);
                    }
                }
            }

            return tasks.Select(t => t.Name).Where(seen.Contains);
        }

        /// <summary>
        /// The shortest cycle from <paramref name="name"/> back to itself along "is read by" (upstream to downstream),
        /// as task names from <paramref name="name"/> to <paramref name="name"/>; null when there is none.
        /// </summary>
        private static List<string>? CycleThrough(string name, Dictionary<string, List<string>> direct)
        {
            var downstream = direct.Keys.ToDictionary(k => k, k => direct.Keys.Where(d => direct[d].Contains(k)).ToList());
            var cameFrom = new Dictionary<string, string>();
            var queue = new Queue<string>();
            queue.Enqueue(name);
            while (queue.Count > 0)
            {
                var current = queue.Dequeue();
                foreach (var next in downstream[current])
                {
                    if (next == name)
                    {
                        var path = new List<string> { name };
                        for (var step = current; step != name; step = cameFrom[step])
                        {
                            path.Insert(1, step);
                        }

                        path.Add(name);
                        return path;
                    }

                    if (!cameFrom.ContainsKey(next))
                    {
                        cameFrom[next] = current;
                        queue.Enqueue(next);
                    }
                }
            }

            return null;
        }
    }
}
