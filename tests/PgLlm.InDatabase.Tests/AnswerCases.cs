using System.Text.Json.Nodes;

namespace PgLlm.InDatabase.Tests;

/// <summary>The answer cases of Data/answer-cases.json: name, answer text, whether it is valid.</summary>
internal static class AnswerCases
{
    private static JsonObject File() =>
        JsonNode.Parse(System.IO.File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Data", "answer-cases.json")))!.AsObject();

    /// <summary>The file's valid base answer with some values replaced, as text.</summary>
    public static string Base(params (string Key, JsonNode? Value)[] values)
    {
        var answer = File()["base"]!.DeepClone().AsObject();
        foreach (var (key, value) in values)
        {
            answer[key] = value;
        }

        return answer.ToJsonString();
    }

    public static List<(string Name, string Text, bool Valid)> Load()
    {
        var file = File();
        var cases = new List<(string, string, bool)>();
        foreach (var entry in file["cases"]!.AsArray())
        {
            var name = (string)entry!["name"]!;
            if (entry["text"] is JsonNode text)
            {
                cases.Add((name, (string)text!, (bool)entry["valid"]!));
                continue;
            }

            var answer = file["base"]!.DeepClone().AsObject();
            foreach (var (key, value) in entry["set"]?.AsObject() ?? [])
            {
                answer[key] = value?.DeepClone();
            }

            foreach (var key in entry["remove"]?.AsArray() ?? [])
            {
                answer.Remove((string)key!);
            }

            cases.Add((name, answer.ToJsonString(), (bool)entry["valid"]!));
        }

        return cases;
    }
}
